//! Storage answers as errors: whether storage refused a request's credentials, the error for
//! an answer that is not a success, and the start of an answer's body for messages, with the
//! credentials that storage error answers echo back redacted (messages reach logs and users).

use super::{Request, Response};
use crate::api::CopyError;

/// S3's answer to an expired session token: a 400 with this code, not a 401 or 403.
const EXPIRED_TOKEN: &str = "ExpiredToken";

/// Whether storage refused a request's credentials (an expired signed URL or session token,
/// most likely): a 401 or 403, or S3's `ExpiredToken`.
pub fn credentials_refused(status: Option<u16>, message: &str) -> bool {
    matches!(status, Some(401 | 403)) || (status == Some(400) && message.contains(EXPIRED_TOKEN))
}

/// `credentials_refused` for an error already classified (401/403 are `Unauthorized`).
pub fn error_refuses_credentials(error: &CopyError) -> bool {
    error.kind == crate::api::ErrorKind::Unauthorized || error.message.contains(EXPIRED_TOKEN)
}

/// The error for a storage answer that is not a success: the request (without its signed
/// query), the status, `what` was asked of it, and the start of the answer.
pub fn storage_refusal(request: &Request, response: &Response, what: &str) -> CopyError {
    CopyError::new(
        CopyError::kind_for_status(response.status),
        format!(
            "{}: storage answered HTTP {} {what}: {}",
            request.describe(),
            response.status,
            response.body_snippet()
        ),
    )
}

pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let text = redact_echoed_credentials(&text);
    let text: String = text.chars().take(300).collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Elements of storage error answers that echo credentials back: S3 repeats an expired session
/// token (`<Token-0>`) and, for a bad signature, the canonical request with the token in it.
const ECHOED_CREDENTIALS: [&str; 4] = [
    "Token-",
    "CanonicalRequest",
    "StringToSign",
    "AWSAccessKeyId",
];

/// The text with the content of those elements replaced by `***` (to the end of the text
/// when an element is cut off).
fn redact_echoed_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        let after = &rest[at + 1..];
        let echoed = ECHOED_CREDENTIALS
            .iter()
            .any(|name| after.starts_with(name));
        let Some(close) = after.find('>').filter(|_| echoed) else {
            out.push_str(&rest[..at + 1]);
            rest = after;
            continue;
        };
        let name = &after[..close];
        out.push_str(&rest[..at + 1 + close + 1]);
        out.push_str("***");
        let content = &after[close + 1..];
        match content.find(&format!("</{name}>")) {
            Some(end) => rest = &content[end..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_never_echo_credentials() {
        let body = b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message>\
<Token-0>FwoGZXIvYXdzEXAMPLEsession</Token-0><CanonicalRequest>PUT /b/k\nx-amz-security-token:FwoGZXIvYXdzEXAMPLEsession</CanonicalRequest><RequestId>R1</RequestId></Error>";
        let text = snippet(body);
        assert!(!text.contains("FwoGZXIvYXdz"), "{text}");
        assert!(
            text.contains("<Code>ExpiredToken</Code>") && text.contains("<Token-0>***</Token-0>"),
            "{text}"
        );
        assert!(text.contains("<RequestId>R1</RequestId>"), "{text}");
        // Cut off inside an element: nothing after its start.
        assert_eq!(
            snippet(b"<Error><StringToSign>AWS4 secret"),
            "<Error><StringToSign>***"
        );
    }
}
