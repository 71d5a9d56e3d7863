#[tokio::main]
async fn main() {
    let c = reqwest::Client::new();
    let r = c.get("http://127.0.0.1:1/").send().await.map(|r| r.status().as_u16());
    println!("{r:?} {}", serde_json::json!({"a": 1}));
    #[cfg(feature = "vault")]
    {
        let s = vaultrs::client::VaultClientSettingsBuilder::default().address("http://127.0.0.1:1").token("x").build().unwrap();
        let cl = vaultrs::client::VaultClient::new(s).unwrap();
        let r: Result<serde_json::Value, _> = vaultrs::kv2::read(&cl, "secret", "x").await;
        println!("{}", r.is_ok());
    }
    #[cfg(feature = "aws")]
    {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).region(aws_config::Region::new("us-east-1")).endpoint_url("http://127.0.0.1:1").load().await;
        let sm = aws_sdk_secretsmanager::Client::new(&conf);
        let r = sm.get_secret_value().secret_id("x").send().await;
        println!("{}", r.is_ok());
    }
}
