//! Command opcodes (header byte 1).

/// Declares a `u8`/`u16` code enum that keeps unknown values instead of failing.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this library does not know; kept verbatim.
            Unknown($repr),
        }

        impl $name {
            /// Maps a wire value to its variant (unknown values are kept).
            #[inline]
            pub const fn from_raw(raw: $repr) -> Self {
                match raw {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The wire value.
            #[inline]
            pub const fn raw(self) -> $repr {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(other) => other,
                }
            }

            /// The protocol's name for this value, or `None` if unknown.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some(stringify!($variant)), )*
                    Self::Unknown(_) => None,
                }
            }
        }

        impl From<$repr> for $name {
            #[inline]
            fn from(raw: $repr) -> Self {
                Self::from_raw(raw)
            }
        }

        impl From<$name> for $repr {
            #[inline]
            fn from(code: $name) -> Self {
                code.raw()
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => write!(f, "{name}({:#x})", self.raw()),
                    None => write!(f, "unknown({:#x})", self.raw()),
                }
            }
        }
    };
}

pub(crate) use code_enum;

code_enum! {
    /// A memcached binary protocol opcode, as DCP and its handshake use them.
    ///
    /// Unknown opcodes are kept as [`Opcode::Unknown`], so a decoder can report
    /// or skip them without failing on the header.
    pub enum Opcode: u8 {
        /// GET (0x00).
        Get = 0x00,
        /// SET (0x01).
        Set = 0x01,
        /// ADD (0x02).
        Add = 0x02,
        /// REPLACE (0x03).
        Replace = 0x03,
        /// DELETE (0x04).
        Delete = 0x04,
        /// INCREMENT (0x05).
        Increment = 0x05,
        /// DECREMENT (0x06).
        Decrement = 0x06,
        /// QUIT (0x07).
        Quit = 0x07,
        /// FLUSH (0x08).
        Flush = 0x08,
        /// GETQ (0x09).
        GetQ = 0x09,
        /// Plain memcached NOOP (0x0a); the client-side keep-alive.
        Noop = 0x0a,
        /// VERSION (0x0b).
        Version = 0x0b,
        /// GETK (0x0c).
        GetK = 0x0c,
        /// GETKQ (0x0d).
        GetKQ = 0x0d,
        /// APPEND (0x0e).
        Append = 0x0e,
        /// PREPEND (0x0f).
        Prepend = 0x0f,
        /// STAT (0x10).
        Stat = 0x10,
        /// SETQ (0x11).
        SetQ = 0x11,
        /// ADDQ (0x12).
        AddQ = 0x12,
        /// REPLACEQ (0x13).
        ReplaceQ = 0x13,
        /// DELETEQ (0x14).
        DeleteQ = 0x14,
        /// INCREMENTQ (0x15).
        IncrementQ = 0x15,
        /// DECREMENTQ (0x16).
        DecrementQ = 0x16,
        /// QUITQ (0x17).
        QuitQ = 0x17,
        /// FLUSHQ (0x18).
        FlushQ = 0x18,
        /// APPENDQ (0x19).
        AppendQ = 0x19,
        /// PREPENDQ (0x1a).
        PrependQ = 0x1a,
        /// TOUCH (0x1c).
        Touch = 0x1c,
        /// GAT, get and touch (0x1d).
        Gat = 0x1d,
        /// GATQ (0x1e).
        GatQ = 0x1e,
        /// HELLO feature negotiation (0x1f).
        Hello = 0x1f,
        /// SASL_LIST_MECHS (0x20).
        SaslListMechs = 0x20,
        /// SASL_AUTH (0x21).
        SaslAuth = 0x21,
        /// SASL_STEP (0x22).
        SaslStep = 0x22,
        /// SET_VBUCKET, as ns_server uses it (0x3d).
        SetVbucket = 0x3d,
        /// GET_VBUCKET (0x3e).
        GetVbucket = 0x3e,
        /// DEL_VBUCKET (0x3f).
        DelVbucket = 0x3f,
        /// GET_ALL_VB_SEQNOS (0x48).
        GetAllVbSeqnos = 0x48,
        /// DCP_OPEN (0x50).
        DcpOpen = 0x50,
        /// DCP_ADD_STREAM (0x51).
        DcpAddStream = 0x51,
        /// DCP_CLOSE_STREAM (0x52).
        DcpCloseStream = 0x52,
        /// DCP_STREAM_REQ (0x53).
        DcpStreamReq = 0x53,
        /// DCP_GET_FAILOVER_LOG (0x54).
        DcpGetFailoverLog = 0x54,
        /// DCP_STREAM_END (0x55).
        DcpStreamEnd = 0x55,
        /// DCP_SNAPSHOT_MARKER (0x56).
        DcpSnapshotMarker = 0x56,
        /// DCP_MUTATION (0x57).
        DcpMutation = 0x57,
        /// DCP_DELETION (0x58).
        DcpDeletion = 0x58,
        /// DCP_EXPIRATION (0x59).
        DcpExpiration = 0x59,
        /// DCP_FLUSH (0x5a); obsolete, never sent by current servers.
        DcpFlush = 0x5a,
        /// DCP_SET_VBUCKET_STATE (0x5b).
        DcpSetVbucketState = 0x5b,
        /// DCP_NOOP (0x5c).
        DcpNoop = 0x5c,
        /// DCP_BUFFER_ACKNOWLEDGEMENT (0x5d).
        DcpBufferAck = 0x5d,
        /// DCP_CONTROL (0x5e).
        DcpControl = 0x5e,
        /// DCP_SYSTEM_EVENT (0x5f).
        DcpSystemEvent = 0x5f,
        /// DCP_PREPARE (0x60).
        DcpPrepare = 0x60,
        /// DCP_SEQNO_ACKNOWLEDGED (0x61).
        DcpSeqnoAcknowledged = 0x61,
        /// DCP_COMMIT (0x62).
        DcpCommit = 0x62,
        /// DCP_ABORT (0x63).
        DcpAbort = 0x63,
        /// DCP_SEQNO_ADVANCED (0x64).
        DcpSeqnoAdvanced = 0x64,
        /// DCP_OSO_SNAPSHOT (0x65).
        DcpOsoSnapshot = 0x65,
        /// DCP_CACHE_TRANSFER (0x66).
        DcpCacheTransfer = 0x66,
        /// DCP_CACHE_TRANSFER_END (0x67).
        DcpCacheTransferEnd = 0x67,
        /// LIST_BUCKETS (0x87).
        ListBuckets = 0x87,
        /// SELECT_BUCKET (0x89).
        SelectBucket = 0x89,
        /// GET_FAILOVER_LOG, the non-DCP variant (0x96).
        GetFailoverLog = 0x96,
        /// GET_CLUSTER_CONFIG (0xb5).
        GetClusterConfig = 0xb5,
        /// GET_RANDOM_KEY (0xb6).
        GetRandomKey = 0xb6,
        /// SEQNO_PERSISTENCE (0xb7).
        SeqnoPersistence = 0xb7,
        /// GET_ERROR_MAP (0xfe).
        GetErrorMap = 0xfe,
    }
}

impl Opcode {
    /// Whether this is one of the DCP opcodes (0x50..=0x67).
    pub const fn is_dcp(self) -> bool {
        matches!(self.raw(), 0x50..=0x67)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for raw in 0..=u8::MAX {
            assert_eq!(Opcode::from_raw(raw).raw(), raw);
        }
        assert_eq!(Opcode::from_raw(0x57), Opcode::DcpMutation);
        assert_eq!(Opcode::from_raw(0xee), Opcode::Unknown(0xee));
        assert_eq!(Opcode::DcpMutation.to_string(), "DcpMutation(0x57)");
    }
}
