//! MQTT topic layout. Everything lives under `ef/v1/`:
//!
//! | topic | direction | payload |
//! |---|---|---|
//! | `ef/v1/trust/root` | server → devices, retained | [`crate::Signed`] root |
//! | `ef/v1/d/{device}/manifest` | server → device, retained | [`crate::Signed`] manifest |
//! | `ef/v1/g/{group}/manifest` | server → group, retained | [`crate::Signed`] manifest |
//! | `ef/v1/d/{device}/chunk/req` | device → server | [`crate::ChunkRequest`] |
//! | `ef/v1/d/{device}/chunk/resp` | server → device | [`crate::ChunkResponse`] |
//! | `ef/v1/d/{device}/up` | device → server, QoS 1 | [`crate::Signed`] uplink |
//! | `ef/v1/d/{device}/ack` | server → device, QoS 1 | [`crate::UplinkAck`] |
//!
//! Payloads are postcard. Device and group ids are 1–64 characters of
//! `[A-Za-z0-9._-]`, so they can never contain MQTT separators or wildcards.

use alloc::format;
use alloc::string::String;

/// Topic prefix.
pub const PREFIX: &str = "ef/v1";

/// Whether `id` is a valid device or group id.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Root of trust updates.
pub fn root() -> String {
    format!("{PREFIX}/trust/root")
}

/// A device's manifest.
pub fn device_manifest(device: &str) -> String {
    format!("{PREFIX}/d/{device}/manifest")
}

/// A group's manifest.
pub fn group_manifest(group: &str) -> String {
    format!("{PREFIX}/g/{group}/manifest")
}

/// Chunk requests from a device.
pub fn chunk_request(device: &str) -> String {
    format!("{PREFIX}/d/{device}/chunk/req")
}

/// Chunk responses to a device.
pub fn chunk_response(device: &str) -> String {
    format!("{PREFIX}/d/{device}/chunk/resp")
}

/// A device's uplink (telemetry, events).
pub fn uplink(device: &str) -> String {
    format!("{PREFIX}/d/{device}/up")
}

/// The server's acknowledgements of a device's uplinks.
pub fn uplink_ack(device: &str) -> String {
    format!("{PREFIX}/d/{device}/ack")
}

/// Subscription filter for every device's chunk requests.
pub const ALL_CHUNK_REQUESTS: &str = "ef/v1/d/+/chunk/req";
/// Subscription filter for every device's uplink.
pub const ALL_UPLINKS: &str = "ef/v1/d/+/up";

/// A parsed topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    /// Root updates.
    Root,
    /// A device manifest.
    DeviceManifest(&'a str),
    /// A group manifest.
    GroupManifest(&'a str),
    /// A device's chunk request.
    ChunkRequest(&'a str),
    /// A device's chunk response.
    ChunkResponse(&'a str),
    /// A device's uplink.
    Uplink(&'a str),
    /// The server's acknowledgements to a device.
    UplinkAck(&'a str),
}

/// Parses a topic of this layout.
pub fn parse(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    if rest == "trust/root" {
        return Some(Topic::Root);
    }
    let mut parts = rest.splitn(3, '/');
    let scope = parts.next()?;
    let id = parts.next()?;
    let tail = parts.next()?;
    if !valid_id(id) {
        return None;
    }
    match (scope, tail) {
        ("d", "manifest") => Some(Topic::DeviceManifest(id)),
        ("g", "manifest") => Some(Topic::GroupManifest(id)),
        ("d", "chunk/req") => Some(Topic::ChunkRequest(id)),
        ("d", "chunk/resp") => Some(Topic::ChunkResponse(id)),
        ("d", "up") => Some(Topic::Uplink(id)),
        ("d", "ack") => Some(Topic::UplinkAck(id)),
        _ => None,
    }
}
