//! Outgoing webhooks (the retraining trigger): a JSON `POST` over plain
//! HTTP/1.1 with a 10-second limit. Anything but a 2xx is a failure the
//! caller retries later.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Posts `body` to `url` (`http://` only).
///
/// # Errors
/// Bad URL, connection failure, timeout or a non-2xx answer.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<(), String> {
    if !url.starts_with("http://") {
        return Err(format!("{url}: only http:// webhooks are supported (put a TLS proxy in front for https)"));
    }
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let req = axum::http::Request::post(uri)
        .header("content-type", "application/json")
        .header("user-agent", concat!("edgefleet-server/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| format!("{url}: no answer within 10 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status().is_success() { Ok(()) } else { Err(format!("{url}: HTTP {}", resp.status())) }
}
