//! DCP_CONTROL on a producer connection: the keys of wire.md §13, with the
//! server's refusals (EINVAL for unknown keys and bad values, NotSupported
//! for unsupported combinations).

use std::time::Duration;

use crate::codec::Status;
use crate::msg::OpenFlags;

/// Out-of-order backfill permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OsoMode {
    /// `true`.
    Enabled,
    /// `true_with_seqno_advanced`.
    WithSeqnoAdvanced,
}

/// The controls a producer connection has accepted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Controls {
    pub(crate) noop_enabled: bool,
    pub(crate) noop_interval: Option<Duration>,
    /// `connection_buffer_size`, applied to the flow-control window.
    pub(crate) buffer_size: Option<u32>,
    pub(crate) send_stream_end_on_close: bool,
    pub(crate) expiry_opcode: bool,
    pub(crate) cursor_dropping: bool,
    pub(crate) force_value_compression: bool,
    pub(crate) hifi_mfu: bool,
    pub(crate) stream_id: bool,
    pub(crate) sync_writes: bool,
    pub(crate) consumer_name: Option<String>,
    pub(crate) oso: Option<OsoMode>,
    pub(crate) v7_status_codes: bool,
    pub(crate) flatbuffers_events: bool,
    pub(crate) max_marker_v2_2: bool,
    pub(crate) include_deleted_user_xattrs: bool,
    pub(crate) priority: Option<String>,
    pub(crate) backfill_order: Option<String>,
}

/// What a control decision may depend on besides the controls themselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControlContext {
    pub(crate) snappy: bool,
    pub(crate) collections: bool,
    pub(crate) open_flags: OpenFlags,
    pub(crate) min_noop_interval: Duration,
}

impl Controls {
    /// Whether synchronous replication is on (needs a consumer name too):
    /// markers then use v2.0.
    pub(crate) fn sync_replication(&self) -> bool {
        self.sync_writes && self.consumer_name.is_some()
    }

    /// Applies `key = value`; the status is the response's.
    pub(crate) fn apply(&mut self, key: &str, value: &str, ctx: ControlContext) -> Status {
        match key {
            "enable_noop" => {
                self.noop_enabled = value == "true";
                Status::Success
            }
            "set_noop_interval" => match value.parse::<f64>() {
                Ok(secs)
                    if secs.is_finite()
                        && secs >= ctx.min_noop_interval.as_secs_f64()
                        && secs <= 1e9 =>
                {
                    self.noop_interval = Some(Duration::from_secs_f64(secs));
                    Status::Success
                }
                _ => Status::Einval,
            },
            "connection_buffer_size" => match value.parse::<u32>() {
                Ok(size) => {
                    self.buffer_size = Some(size);
                    Status::Success
                }
                Err(_) => Status::Einval,
            },
            "stream_buffer_size" => Status::NotSupported,
            "set_priority" => match value {
                "high" | "medium" | "low" => {
                    self.priority = Some(value.to_owned());
                    Status::Success
                }
                _ => Status::Einval,
            },
            "force_value_compression" => {
                if !ctx.snappy {
                    return Status::Einval;
                }
                self.force_value_compression = value == "true";
                Status::Success
            }
            "supports_cursor_dropping" | "supports_cursor_dropping_vulcan" => {
                self.cursor_dropping = value == "true";
                Status::Success
            }
            "supports_hifi_MFU" => {
                self.hifi_mfu = value == "true";
                Status::Success
            }
            "send_stream_end_on_client_close_stream" => {
                if value == "true" {
                    self.send_stream_end_on_close = true;
                }
                Status::Success
            }
            "enable_expiry_opcode" => {
                // Takes effect only with IncludeDeleteTimes; success anyway.
                if value == "true" {
                    self.expiry_opcode = true;
                }
                Status::Success
            }
            "enable_stream_id" => match value {
                "true" if self.sync_writes => Status::NotSupported,
                "true" => {
                    self.stream_id = true;
                    Status::Success
                }
                _ => Status::Einval,
            },
            "enable_sync_writes" => match value {
                "true" if self.stream_id => Status::NotSupported,
                "true" => {
                    self.sync_writes = true;
                    Status::Success
                }
                _ => Status::Einval,
            },
            "consumer_name" => {
                if value.is_empty() {
                    return Status::Einval;
                }
                self.consumer_name = Some(value.to_owned());
                Status::Success
            }
            "enable_out_of_order_snapshots" => match value {
                "true" => {
                    self.oso = Some(OsoMode::Enabled);
                    Status::Success
                }
                "true_with_seqno_advanced" => {
                    self.oso = Some(OsoMode::WithSeqnoAdvanced);
                    Status::Success
                }
                _ => Status::Einval,
            },
            "include_deleted_user_xattrs" => {
                if value == "true"
                    && ctx
                        .open_flags
                        .contains(OpenFlags::INCLUDE_DELETED_USER_XATTRS)
                {
                    self.include_deleted_user_xattrs = true;
                    Status::Success
                } else {
                    Status::Einval
                }
            }
            "v7_dcp_status_codes" => match value {
                "true" => {
                    self.v7_status_codes = true;
                    Status::Success
                }
                _ => Status::Einval,
            },
            "flatbuffers_system_events" => match value {
                "true" => {
                    self.flatbuffers_events = true;
                    Status::Success
                }
                _ => Status::Einval,
            },
            // Storage here is couchstore-like: no history retention.
            "change_streams" => Status::NotSupported,
            "max_marker_version" => match value {
                "2.2" if !ctx.collections => Status::NotSupported,
                "2.2" => {
                    self.max_marker_v2_2 = true;
                    Status::Success
                }
                _ => Status::Einval,
            },
            "backfill_order" => match value {
                "round-robin" | "sequential" => {
                    self.backfill_order = Some(value.to_owned());
                    Status::Success
                }
                _ => Status::Einval,
            },
            // Cache transfer is not enabled on this server; the probe fails
            // as on a server without it.
            _ => Status::Einval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ControlContext {
        ControlContext {
            snappy: false,
            collections: false,
            open_flags: OpenFlags::PRODUCER,
            min_noop_interval: Duration::from_millis(100),
        }
    }

    #[test]
    fn keys_and_refusals() {
        let mut c = Controls::default();
        let cx = ctx();
        assert_eq!(c.apply("enable_noop", "true", cx), Status::Success);
        assert!(c.noop_enabled);
        assert_eq!(c.apply("enable_noop", "yes", cx), Status::Success);
        assert!(!c.noop_enabled);
        assert_eq!(c.apply("set_noop_interval", "0.05", cx), Status::Einval);
        assert_eq!(c.apply("set_noop_interval", "abc", cx), Status::Einval);
        assert_eq!(c.apply("set_noop_interval", "0.5", cx), Status::Success);
        assert_eq!(c.noop_interval, Some(Duration::from_millis(500)));
        assert_eq!(c.apply("connection_buffer_size", "-1", cx), Status::Einval);
        assert_eq!(
            c.apply("connection_buffer_size", "1024", cx),
            Status::Success
        );
        assert_eq!(c.apply("stream_buffer_size", "1", cx), Status::NotSupported);
        assert_eq!(
            c.apply("force_value_compression", "true", cx),
            Status::Einval
        );
        let snappy = ControlContext { snappy: true, ..cx };
        assert_eq!(
            c.apply("force_value_compression", "true", snappy),
            Status::Success
        );
        assert_eq!(
            c.apply("max_marker_version", "2.2", cx),
            Status::NotSupported
        );
        let coll = ControlContext {
            collections: true,
            ..cx
        };
        assert_eq!(c.apply("max_marker_version", "2.2", coll), Status::Success);
        assert_eq!(
            c.apply("include_deleted_user_xattrs", "true", cx),
            Status::Einval
        );
        assert_eq!(c.apply("v7_dcp_status_codes", "false", cx), Status::Einval);
        assert_eq!(
            c.apply("flatbuffers_system_events", "false", cx),
            Status::Einval
        );
        assert_eq!(c.apply("change_streams", "true", cx), Status::NotSupported);
        assert_eq!(c.apply("no_such_key", "true", cx), Status::Einval);
        assert_eq!(c.apply("cache_transfer", "true", cx), Status::Einval);
        assert_eq!(c.apply("set_priority", "urgent", cx), Status::Einval);
        assert_eq!(
            c.apply("send_stream_end_on_client_close_stream", "false", cx),
            Status::Success
        );
        assert!(!c.send_stream_end_on_close);
    }

    #[test]
    fn stream_id_and_sync_writes_exclude_each_other() {
        let mut c = Controls::default();
        assert_eq!(c.apply("enable_stream_id", "false", ctx()), Status::Einval);
        assert_eq!(c.apply("enable_stream_id", "true", ctx()), Status::Success);
        assert_eq!(
            c.apply("enable_sync_writes", "true", ctx()),
            Status::NotSupported
        );
        let mut c = Controls::default();
        assert_eq!(
            c.apply("enable_sync_writes", "true", ctx()),
            Status::Success
        );
        assert!(!c.sync_replication());
        assert_eq!(c.apply("consumer_name", "replica", ctx()), Status::Success);
        assert!(c.sync_replication());
        assert_eq!(
            c.apply("enable_stream_id", "true", ctx()),
            Status::NotSupported
        );
    }
}
