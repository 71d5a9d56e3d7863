//! Mode `csi`: the Secrets Store CSI driver mounts a volume at pod start.
//!
//! Adds one `csi` volume (`readOnly: true`) whose `volumeAttributes` hold only
//! `secretProviderClass`: any other attribute would override the class's parameters.

use super::volumes::{CsiAttributes, CsiSource, Source, Volume};
use crate::decide::plan::Plan;
use crate::vocabulary::names::{CSI_DRIVER, SECRETS_VOLUME};

pub(super) fn volumes(plan: &Plan) -> Vec<Volume<'_>> {
    let class = plan.csi_class.as_deref().unwrap_or_default();
    vec![Volume {
        name: SECRETS_VOLUME,
        source: Source::Csi(CsiSource {
            driver: CSI_DRIVER,
            read_only: true,
            volume_attributes: CsiAttributes { secret_provider_class: class },
        }),
    }]
}
