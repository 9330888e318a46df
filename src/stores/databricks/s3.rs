//! S3 requests signed with temporary credentials (AWS Signature Version 4 with a session token),
//! as Unity Catalog hands them out for a model version's storage location: object URLs, signed
//! GET/PUT/HEAD requests, and ListObjectsV2 answers.
//!
//! Bodies are never hashed (`UNSIGNED-PAYLOAD`), so that files stream; the signature covers the
//! method, the path, the query and every header sent with it.

use crate::api::CopyError;
use crate::transport::{Method, Request};
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SigningInstructions, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use std::time::SystemTime;
use url::Url;

/// MLflow's (and boto3's) way to point S3 clients at an S3-compatible endpoint; path-style
/// URLs are used with it.
pub const ENDPOINT_VAR: &str = "MLFLOW_S3_ENDPOINT_URL";

/// Temporary credentials for one storage location.
#[derive(Clone)]
pub struct TempCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl std::fmt::Debug for TempCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TempCredentials({}, ***)", self.access_key_id)
    }
}

/// Server-side encryption a location asks for on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    S3Managed,
    Kms { key_arn: Option<String> },
}

impl Encryption {
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            Encryption::S3Managed => vec![("x-amz-server-side-encryption".into(), "AES256".into())],
            Encryption::Kms { key_arn } => {
                let mut headers = vec![("x-amz-server-side-encryption".into(), "aws:kms".into())];
                if let Some(arn) = key_arn {
                    headers.push((
                        "x-amz-server-side-encryption-aws-kms-key-id".into(),
                        arn.clone(),
                    ));
                }
                headers
            }
        }
    }
}

/// `s3://bucket/prefix` (or `gs://…`): a bucket and a key prefix (without a trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub prefix: String,
}

impl Location {
    pub fn parse(uri: &str) -> Option<Location> {
        let rest = ["s3://", "s3a://", "gs://"]
            .into_iter()
            .find_map(|scheme| uri.strip_prefix(scheme))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (!bucket.is_empty()).then(|| Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// `r2://<bucket>@<account>.r2.cloudflarestorage.com/<prefix>` (Cloudflare R2, as Unity
    /// Catalog names R2 storage): the location and the account's S3-compatible endpoint,
    /// `https://<account>.r2.cloudflarestorage.com` — derived as MLflow's `R2ArtifactRepository`
    /// derives it (`mlflow/store/artifact/r2_artifact_repo.py`).
    pub fn parse_r2(uri: &str) -> Option<(Location, Url)> {
        let rest = uri.strip_prefix("r2://")?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let (bucket, host) = authority.split_once('@')?;
        let endpoint = Url::parse(&format!("https://{host}")).ok()?;
        (!bucket.is_empty() && !host.is_empty()).then(|| {
            let location = Location {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            };
            (location, endpoint)
        })
    }

    /// The key of a file below the location.
    pub fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }
}

/// Where a bucket is reached: an S3-compatible endpoint or GCS's XML API (path-style), or AWS
/// itself (virtual-hosted, as AWS wants for buckets created since 2020).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub custom: Option<Url>,
    pub region: String,
}

impl Endpoint {
    /// Google Cloud Storage's XML API, which speaks S3's object and listing protocol.
    pub fn gcs() -> Endpoint {
        Endpoint {
            custom: Url::parse("https://storage.googleapis.com").ok(),
            region: "auto".into(),
        }
    }

    /// The URL of a key (or of the bucket, for an empty key). Keys are encoded as SigV4 wants
    /// them (every byte but `A-Z a-z 0-9 - . _ ~` and `/`), so the path is signed as sent.
    pub fn url(&self, bucket: &str, key: &str) -> Url {
        let (mut url, path) = match &self.custom {
            Some(base) => {
                let base_path = base.path().trim_end_matches('/');
                (
                    base.clone(),
                    format!("{base_path}/{}/{}", encode(bucket), encode(key)),
                )
            }
            None => {
                let host = format!("https://{bucket}.s3.{}.amazonaws.com", self.region);
                let url = Url::parse(&host).unwrap_or_else(|_| self.fallback(bucket));
                (url, format!("/{}", encode(key)))
            }
        };
        url.set_path(&path);
        url.set_query(None);
        url
    }

    /// A bucket name that is no host name still has a path-style URL.
    fn fallback(&self, bucket: &str) -> Url {
        let mut url = Url::parse(&format!("https://s3.{}.amazonaws.com", self.region))
            .expect("a fixed AWS URL parses");
        url.set_path(&format!("/{}", encode(bucket)));
        url
    }
}

/// SigV4 URI encoding of a key, `/` kept.
fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Signs a request for S3 with the credentials: adds `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` and `authorization` (and signs every header already on it).
pub fn sign_request(
    mut request: Request,
    credentials: &TempCredentials,
    region: &str,
    now: SystemTime,
) -> Result<Request, CopyError> {
    let credentials = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        Some(credentials.session_token.clone()),
        None,
        "unity-catalog",
    );
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let signable = SignableRequest::new(
        request.method.as_str(),
        request.url.as_str(),
        headers.into_iter(),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| CopyError::bad_input(format!("signing {}: {e}", request.describe())))?;
    let (instructions, _signature) = s3_signature(signable, credentials, region, now)
        .map_err(|e| CopyError::bad_input(format!("signing {}: {e}", request.describe())))?;
    let added: Vec<(String, String)> = instructions
        .headers()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
    request.headers.extend(added);
    Ok(request)
}

/// SigV4 as S3 wants it: paths encoded once and never normalised, the payload hash in a header.
fn s3_signature(
    signable: SignableRequest,
    credentials: aws_credential_types::Credentials,
    region: &str,
    now: SystemTime,
) -> Result<(SigningInstructions, String), String> {
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signed = sign(signable, &params).map_err(|e| e.to_string())?;
    Ok(signed.into_parts())
}

/// The request for one object (`GET`/`PUT`) or the bucket (`HEAD` with an empty key), not yet
/// signed; writes carry the location's encryption headers.
pub fn object(
    method: Method,
    endpoint: &Endpoint,
    location: &Location,
    key: &str,
    encryption: Option<&Encryption>,
) -> Request {
    let mut request = Request::to_issued(method, endpoint.url(&location.bucket, key));
    if method == Method::Put {
        request = request.header("content-type", "application/octet-stream");
        if let Some(encryption) = encryption {
            request.headers.extend(encryption.headers());
        }
    }
    request
}

/// `object`, signed with the credentials.
pub fn object_request(
    method: Method,
    endpoint: &Endpoint,
    location: &Location,
    key: &str,
    encryption: Option<&Encryption>,
    credentials: &TempCredentials,
) -> Result<Request, CopyError> {
    let request = object(method, endpoint, location, key, encryption);
    sign_request(request, credentials, &endpoint.region, SystemTime::now())
}

/// The steps of an S3 multipart upload of one object, unsigned (see `sign_request`): create
/// (`POST ?uploads`, with the encryption headers), a part (`PUT ?partNumber&uploadId`),
/// complete (`POST ?uploadId` with the parts' ETags), abort (`DELETE ?uploadId`).
pub enum MultipartStep<'a> {
    Create(Option<&'a Encryption>),
    Part {
        number: usize,
        upload_id: &'a str,
    },
    Complete {
        upload_id: &'a str,
        etags: &'a [String],
    },
    Abort {
        upload_id: &'a str,
    },
}

pub fn multipart_request(url: Url, step: MultipartStep) -> Request {
    let with_query = |pairs: &[(&str, &str)]| {
        let mut url = url.clone();
        url.query_pairs_mut().extend_pairs(pairs);
        url
    };
    match step {
        MultipartStep::Create(encryption) => {
            let mut request = Request::to_issued(Method::Post, with_query(&[("uploads", "")]))
                .header("content-type", "application/octet-stream");
            if let Some(encryption) = encryption {
                request.headers.extend(encryption.headers());
            }
            request
        }
        MultipartStep::Part { number, upload_id } => {
            let number = number.to_string();
            let query = [("partNumber", number.as_str()), ("uploadId", upload_id)];
            Request::to_issued(Method::Put, with_query(&query))
        }
        MultipartStep::Complete { upload_id, etags } => {
            let mut xml = String::from("<CompleteMultipartUpload>");
            for (index, etag) in etags.iter().enumerate() {
                xml.push_str(&format!(
                    "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                    index + 1,
                    xml_escape(etag)
                ));
            }
            xml.push_str("</CompleteMultipartUpload>");
            let mut request =
                Request::to_issued(Method::Post, with_query(&[("uploadId", upload_id)]))
                    .header("content-type", "application/xml");
            request.body = xml.into_bytes();
            request
        }
        MultipartStep::Abort { upload_id } => {
            Request::to_issued(Method::Delete, with_query(&[("uploadId", upload_id)]))
        }
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The `UploadId` of a CreateMultipartUpload answer.
pub fn parse_upload_id(xml: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(xml).map_err(|e| format!("not UTF-8: {e}"))?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    doc.descendants()
        .find(|n| n.tag_name().name() == "UploadId")
        .and_then(|n| n.text())
        .map(str::to_string)
        .ok_or_else(|| "no UploadId in the answer".to_string())
}

/// The URL of one page of ListObjectsV2 (`list-type=2`) below a prefix (S3, and GCS's XML API).
pub fn list_url(endpoint: &Endpoint, location: &Location, continuation: Option<&str>) -> Url {
    let mut url = endpoint.url(&location.bucket, "");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("list-type", "2");
        query.append_pair("prefix", &format!("{}/", location.prefix));
        if let Some(token) = continuation {
            query.append_pair("continuation-token", token);
        }
    }
    url
}

/// The objects of one ListObjectsV2 page (key, size) and the token of the next page.
#[derive(Debug, PartialEq)]
pub struct Listing {
    pub objects: Vec<(String, u64)>,
    pub next: Option<String>,
}

pub fn parse_listing(xml: &[u8]) -> Result<Listing, String> {
    let text = std::str::from_utf8(xml).map_err(|e| format!("not UTF-8: {e}"))?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListBucketResult" {
        return Err(format!(
            "a <{}> instead of a listing",
            root.tag_name().name()
        ));
    }
    let child_text = |node: roxmltree::Node, name: &str| {
        node.children()
            .find(|c| c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(str::to_string)
    };
    let mut objects = Vec::new();
    for contents in root
        .children()
        .filter(|c| c.tag_name().name() == "Contents")
    {
        let key = child_text(contents, "Key").ok_or("an object without a key")?;
        let size = child_text(contents, "Size")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("object {key:?} without a size"))?;
        objects.push((key, size));
    }
    let truncated = child_text(root, "IsTruncated").as_deref() == Some("true");
    let next = child_text(root, "NextContinuationToken").filter(|_| truncated);
    Ok(Listing { objects, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn credentials() -> TempCredentials {
        TempCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: "session-token".into(),
        }
    }

    #[test]
    fn locations_split_bucket_and_prefix() {
        let l = Location::parse("s3://bucket/models/a/versions/b/").unwrap();
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.key("MLmodel"), "models/a/versions/b/MLmodel");
        assert_eq!(Location::parse("abfss://x@y/z"), None);
        assert_eq!(Location::parse("gs://g/p").unwrap().key("f"), "p/f");
        assert_eq!(Location::parse("s3:///x"), None);
        let (r2, endpoint) =
            Location::parse_r2("r2://models@acct1.r2.cloudflarestorage.com/m/a/versions/b/")
                .unwrap();
        assert_eq!(
            (r2.bucket.as_str(), r2.key("MLmodel").as_str()),
            ("models", "m/a/versions/b/MLmodel")
        );
        assert_eq!(endpoint.as_str(), "https://acct1.r2.cloudflarestorage.com/");
        assert_eq!(Location::parse_r2("r2://no-account/x"), None);
        assert_eq!(Location::parse_r2("s3://b/x"), None);
        // An R2 location is not an S3 one.
        assert_eq!(
            Location::parse("r2://models@acct1.r2.cloudflarestorage.com/m"),
            None
        );
    }

    #[test]
    fn urls_are_path_style_at_an_endpoint_and_virtual_hosted_at_aws() {
        let custom = Endpoint {
            custom: Some(Url::parse("http://127.0.0.1:9000").unwrap()),
            region: "us-west-2".into(),
        };
        assert_eq!(
            custom.url("b", "p/odd name+&=.txt").as_str(),
            "http://127.0.0.1:9000/b/p/odd%20name%2B%26%3D.txt"
        );
        let aws = Endpoint {
            custom: None,
            region: "eu-west-1".into(),
        };
        assert_eq!(
            aws.url("b", "k/MLmodel").as_str(),
            "https://b.s3.eu-west-1.amazonaws.com/k/MLmodel"
        );
    }

    // The signing key derivation and string-to-sign follow AWS's published example for
    // S3 (GET /test.txt with a Range header, 2013-05-24, us-east-1, examplebucket), whose
    // signature is given in the S3 documentation ("Example: GET Object").
    #[test]
    fn signatures_match_the_aws_documentation_example() {
        let request = Request::new(
            Method::Get,
            Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap(),
        )
        .header("range", "bytes=0-9");
        let creds = aws_credential_types::Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let empty_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let signable = SignableRequest::new(
            "GET",
            request.url.as_str(),
            [("range", "bytes=0-9")].into_iter(),
            SignableBody::Precomputed(empty_sha.into()),
        )
        .unwrap();
        let (_, signature) = s3_signature(signable, creds, "us-east-1", at).unwrap();
        assert_eq!(
            signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn signed_requests_carry_the_session_token_and_sign_their_headers() {
        let endpoint = Endpoint {
            custom: Some(Url::parse("http://127.0.0.1:9000").unwrap()),
            region: "us-west-2".into(),
        };
        let location = Location::parse("s3://b/models/1").unwrap();
        let kms = Encryption::Kms {
            key_arn: Some("arn:aws:kms:k".into()),
        };
        let put = object_request(
            Method::Put,
            &endpoint,
            &location,
            &location.key("MLmodel"),
            Some(&kms),
            &credentials(),
        )
        .unwrap();
        let header = |name: &str| {
            put.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-amz-security-token"), Some("session-token"));
        assert_eq!(header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert_eq!(header("x-amz-server-side-encryption"), Some("aws:kms"));
        let authorization = header("authorization").unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert!(authorization.contains("/us-west-2/s3/aws4_request"));
        for signed in [
            "host",
            "x-amz-security-token",
            "x-amz-server-side-encryption",
            "x-amz-server-side-encryption-aws-kms-key-id",
        ] {
            assert!(authorization.contains(signed), "{signed} not signed");
        }
        assert!(!authorization.contains("wJalr"), "the secret never travels");
        assert_eq!(put.url.as_str(), "http://127.0.0.1:9000/b/models/1/MLmodel");
    }

    #[test]
    fn multipart_steps_are_the_s3_requests() {
        let url = Url::parse("http://127.0.0.1:9000/b/k/big.bin").unwrap();
        let create = multipart_request(
            url.clone(),
            MultipartStep::Create(Some(&Encryption::S3Managed)),
        );
        assert_eq!(
            (create.method, create.url.query()),
            (Method::Post, Some("uploads="))
        );
        assert!(create
            .headers
            .contains(&("x-amz-server-side-encryption".into(), "AES256".into())));
        let part = multipart_request(
            url.clone(),
            MultipartStep::Part {
                number: 2,
                upload_id: "u+1",
            },
        );
        assert_eq!(part.url.query(), Some("partNumber=2&uploadId=u%2B1"));
        let etags = ["\"a1\"".to_string(), "\"b2\"".to_string()];
        let done = multipart_request(
            url.clone(),
            MultipartStep::Complete {
                upload_id: "u",
                etags: &etags,
            },
        );
        assert_eq!(
            String::from_utf8(done.body).unwrap(),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a1&quot;</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>&quot;b2&quot;</ETag></Part></CompleteMultipartUpload>"
        );
        let abort = multipart_request(url, MultipartStep::Abort { upload_id: "u" });
        assert_eq!(
            (abort.method, abort.url.query()),
            (Method::Delete, Some("uploadId=u"))
        );
        let created = br#"<?xml version="1.0"?><InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>abc-123</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(parse_upload_id(created).unwrap(), "abc-123");
    }

    #[test]
    fn listings_parse_keys_sizes_and_the_next_page() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>m/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>
  <NextContinuationToken>tok==</NextContinuationToken>
  <Contents><Key>m/MLmodel</Key><Size>120</Size></Contents>
  <Contents><Key>m/data/model.pkl</Key><Size>0</Size></Contents>
</ListBucketResult>"#;
        let listing = parse_listing(xml).unwrap();
        assert_eq!(
            listing.objects,
            vec![("m/MLmodel".into(), 120), ("m/data/model.pkl".into(), 0)]
        );
        assert_eq!(listing.next.as_deref(), Some("tok=="));
        let last = br#"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"#;
        assert_eq!(parse_listing(last).unwrap().next, None);
        assert!(parse_listing(b"<Error><Code>AccessDenied</Code></Error>").is_err());
    }
}
