"""Parses rendered bundles back with each format's reference parser, for tests/render_formats.rs.

  python render_formats.py

Reads one JSON request per line on stdin and answers one JSON line on stdout, until EOF, so
a whole proptest run shares one Python process. A request is

  {"format": "dotenv|json|yaml|properties", "file": "<the rendered file, base64>"}

and the answer {"pairs": [[key, value], ...]} in the file's order, or {"error": "..."}.
Each file is written to disk and read back the way an application would read it:

- json: json.load of the file opened as UTF-8 text;
- yaml: PyYAML yaml.safe_load of the file opened in binary (PyYAML detects the encoding);
- dotenv: python-dotenv dotenv_values(path) with its defaults, interpolation on (the caller
  sets variables such as SECRETMODE_RF_SET so a value that gets interpolated shows);
- properties: jproperties Properties.load of the bytes (ISO-8859-1, as Java reads them), after
  checking the file is pure ASCII;
- url (a rendered DSN, not a bundle): urllib.parse.urlsplit, then the user, password and
  query value percent-decoded to bytes, answered base64-encoded (pairs of [part, base64]).
"""

import base64
import json
import os
import sys
import tempfile
import urllib.parse

import yaml
from dotenv import dotenv_values
from jproperties import Properties


def parse(fmt, path, raw):
    if fmt == "json":
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return list(doc.items())
    if fmt == "yaml":
        with open(path, "rb") as f:
            doc = yaml.safe_load(f)
        if not isinstance(doc, dict):
            raise ValueError("not a mapping: %r" % (doc,))
        return list(doc.items())
    if fmt == "dotenv":
        return list(dotenv_values(path).items())
    if fmt == "properties":
        raw.decode("ascii")  # raises on any non-ASCII byte
        p = Properties()
        with open(path, "rb") as f:
            p.load(f, "iso-8859-1")
        return [(k, p[k].data) for k in p]
    if fmt == "url":
        parts = urllib.parse.urlsplit(raw.decode("ascii"))
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, encoding="latin-1")
        b64 = lambda s: base64.b64encode(urllib.parse.unquote_to_bytes(s)).decode()
        return [
            ("scheme", parts.scheme),
            ("username", b64(parts.username)),
            ("password", b64(parts.password)),
            ("hostname", parts.hostname),
            ("port", str(parts.port)),
            ("path", parts.path),
            ("token", base64.b64encode(query["token"][0].encode("latin-1")).decode()),
        ]
    raise ValueError("unknown format %r" % fmt)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "file")
        for line in sys.stdin:
            req = json.loads(line)
            raw = base64.b64decode(req["file"])
            with open(path, "wb") as f:
                f.write(raw)
            try:
                answer = {"pairs": [[k, v] for k, v in parse(req["format"], path, raw)]}
            except Exception as e:  # the caller fails the test with it
                answer = {"error": "%s: %s" % (type(e).__name__, e)}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
