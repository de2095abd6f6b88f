//! Request bodies: which encoding a content type names, and gzip with a bound on the
//! decompressed size (a small gzip body can expand without limit).

use std::io::Read;

use crate::Error;

/// How an OTLP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// Binary protobuf (`application/x-protobuf` or `application/protobuf`).
    Protobuf,
    /// OTLP/JSON (`application/json`).
    Json,
    /// JSON log lines, one object per line (`application/x-ndjson`, `application/jsonl`); logs
    /// only.
    JsonLines,
}

impl BodyEncoding {
    /// Reads a `Content-Type` header value; parameters such as `charset` are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, Error> {
        let raw = content_type.unwrap_or("");
        let media = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            "application/x-ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-lines" => Ok(Self::JsonLines),
            _ => Err(Error::UnsupportedContentType {
                content_type: raw.to_string(),
            }),
        }
    }

    /// The `Content-Type` value of this encoding, for responses written in it.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json | Self::JsonLines => "application/json",
        }
    }
}

/// Undoes the `Content-Encoding` of a body, refusing to produce more than `limit_bytes`.
pub fn decode_body(
    body: &[u8],
    content_encoding: Option<&str>,
    limit_bytes: u64,
) -> Result<Vec<u8>, Error> {
    if body.len() as u64 > limit_bytes {
        return Err(Error::TooLarge {
            size_bytes: body.len() as u64,
            limit_bytes,
        });
    }
    let encoding = content_encoding
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => {
            let mut out =
                Vec::with_capacity(body.len().saturating_mul(4).min(limit_bytes as usize));
            let mut decoder = flate2::read::GzDecoder::new(body).take(limit_bytes + 1);
            decoder.read_to_end(&mut out).map_err(|e| Error::Gzip {
                reason: e.to_string(),
            })?;
            if out.len() as u64 > limit_bytes {
                return Err(Error::InflatesTooLarge { limit_bytes });
            }
            Ok(out)
        }
        _ => Err(Error::UnsupportedContentEncoding { encoding }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("write to memory");
        encoder.finish().expect("finish in memory")
    }

    #[test]
    fn decode_body_inflates_gzip() {
        let body = gzip(b"hello");
        assert_eq!(
            decode_body(&body, Some("gzip"), 100).expect("valid gzip"),
            b"hello"
        );
    }

    #[test]
    fn decode_body_stops_a_gzip_bomb_at_the_limit() {
        let body = gzip(&vec![0u8; 10_000_000]);
        assert!(body.len() < 100_000);
        let err = decode_body(&body, Some("gzip"), 1_000_000).expect_err("over the limit");
        assert!(
            matches!(
                err,
                Error::InflatesTooLarge {
                    limit_bytes: 1_000_000
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn decode_body_rejects_broken_gzip_and_unknown_encodings() {
        assert!(matches!(
            decode_body(b"nope", Some("gzip"), 100),
            Err(Error::Gzip { .. })
        ));
        assert!(matches!(
            decode_body(b"x", Some("br"), 100),
            Err(Error::UnsupportedContentEncoding { .. })
        ));
    }

    #[test]
    fn content_type_ignores_parameters_and_case() {
        assert_eq!(
            BodyEncoding::from_content_type(Some("Application/JSON; charset=utf-8")).ok(),
            Some(BodyEncoding::Json)
        );
        assert!(BodyEncoding::from_content_type(Some("text/plain")).is_err());
        assert!(BodyEncoding::from_content_type(None).is_err());
    }
}
