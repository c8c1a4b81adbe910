//! Bounded body read: a huge or endless body gets 413, never unbounded memory.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use crate::error::Error;

/// Reads at most `limit` bytes of body.
pub async fn read<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge(limit)),
        Err(e) => Err(Error::InvalidInput(format!("body could not be read: {e}"))),
    }
}
