//! Server-initiated requests (magic 0x82, HELLO Duplex): cluster-map change
//! notifications become [`Event::ClusterConfig`]s; anything else is
//! ignored. None is answered (the server expects no response).

use bytes::Bytes;

use super::event::Event;
use super::{Consumer, Pending};
use crate::codec::{Frame, Status};
use crate::msg::client::{ClustermapNotification, GetClusterConfig, KnownVersion};

/// The version fields of a bucket config JSON.
#[derive(serde::Deserialize)]
struct VersionFields {
    rev: i64,
    #[serde(default, rename = "revEpoch")]
    rev_epoch: i64,
}

/// The version of a config JSON, if it has one.
pub(super) fn config_version(json: &[u8]) -> Option<KnownVersion> {
    let fields: VersionFields = serde_json::from_slice(json).ok()?;
    Some(KnownVersion {
        epoch: fields.rev_epoch,
        revision: fields.rev,
    })
}

impl Consumer {
    /// The newest config version this connection has seen (pushed, or
    /// answered to GET_CLUSTER_CONFIG).
    pub fn config_version_seen(&self) -> Option<KnownVersion> {
        self.config_seen
    }

    /// Records a config seen on this connection; whether it is newer than
    /// any seen before.
    pub(super) fn note_config_seen(&mut self, version: KnownVersion) -> bool {
        if self.config_seen.is_some_and(|seen| seen >= version) {
            return false;
        }
        self.config_seen = Some(version);
        true
    }

    /// A frame with magic 0x82.
    pub(super) fn on_server_request(&mut self, frame: &Frame) {
        if !ClustermapNotification::matches(frame) {
            // Unknown server requests are none of a DCP consumer's
            // business; the connection goes on.
            self.stats.server_requests_ignored += 1;
            return;
        }
        let Ok(notification) = ClustermapNotification::decode(frame) else {
            self.stats.server_requests_ignored += 1;
            return;
        };
        self.stats.config_notifications += 1;
        let version = notification.version;
        if notification.is_brief() {
            self.fetch_announced_config(version);
            return;
        }
        let config = match crate::msg::decompress_value(
            notification.datatype,
            &notification.config,
            self.config.max_frame_len,
        ) {
            Ok((_, config)) => config,
            Err(_) => {
                self.stats.server_requests_ignored += 1;
                return;
            }
        };
        // An older or repeated config is dropped here: the caller only
        // hears of configs newer than any this connection saw.
        if self.note_config_seen(version) {
            self.events.push_back(Event::ClusterConfig {
                status: Status::Success,
                config,
            });
        }
    }

    /// A brief notification announced `version`: fetch the config unless
    /// it is not newer than one seen or already being fetched.
    fn fetch_announced_config(&mut self, version: KnownVersion) {
        if self.config_seen.is_some_and(|seen| seen >= version)
            || self.config_fetch.is_some_and(|asked| asked >= version)
            || !self.is_ready()
        {
            return;
        }
        if let Ok(opaque) = self.out.send(GetClusterConfig {
            opaque: 0,
            known: None,
        }) {
            self.pending.insert(opaque, Pending::ClusterConfig);
            self.config_fetch = Some(version);
        }
    }

    /// A GET_CLUSTER_CONFIG answer arrived.
    pub(super) fn on_config_answer(&mut self, status: Status, config: &Bytes) {
        self.config_fetch = None;
        if status.is_success()
            && let Some(version) = config_version(config)
        {
            self.note_config_seen(version);
        }
    }
}
