//! Response status codes (header bytes 6-7 of a response).

use super::opcode::code_enum;

code_enum! {
    /// A response status. Unknown codes are kept as [`Status::Unknown`]:
    /// servers add codes over time and clients must cope with them.
    pub enum Status: u16 {
        /// Success (0x00).
        Success = 0x00,
        /// Key not found, or no such stream (0x01).
        KeyEnoent = 0x01,
        /// Key exists, or a stream already exists for the vbucket (0x02).
        KeyEexists = 0x02,
        /// Value too large (0x03).
        E2big = 0x03,
        /// Invalid arguments (0x04).
        Einval = 0x04,
        /// Item not stored (0x05).
        NotStored = 0x05,
        /// Incr/decr on a non-numeric value (0x06).
        DeltaBadval = 0x06,
        /// The vbucket is not owned (or not active) here (0x07).
        NotMyVbucket = 0x07,
        /// No bucket selected (0x08).
        NoBucket = 0x08,
        /// The resource is locked (0x09).
        Locked = 0x09,
        /// DCP consumer reply: stream not found (0x0a, v7 status codes).
        DcpStreamNotFound = 0x0a,
        /// DCP consumer reply: opaque does not match (0x0b, v7 status codes).
        OpaqueNoMatch = 0x0b,
        /// Authentication is stale (0x1f).
        AuthStale = 0x1f,
        /// Authentication failed (0x20).
        AuthError = 0x20,
        /// Authentication continues: another SASL step is needed (0x21).
        AuthContinue = 0x21,
        /// A seqno range is invalid (0x22).
        Erange = 0x22,
        /// The stream request must roll back; value holds the seqno (0x23).
        Rollback = 0x23,
        /// No access (0x24).
        Eaccess = 0x24,
        /// The node is not initialized (0x25).
        NotInitialized = 0x25,
        /// Unknown framing-extras id (0x80).
        UnknownFrameInfo = 0x80,
        /// Unknown command (0x81).
        UnknownCommand = 0x81,
        /// Out of memory (0x82).
        Enomem = 0x82,
        /// Not supported (0x83).
        NotSupported = 0x83,
        /// Internal error (0x84).
        Einternal = 0x84,
        /// Busy; retry later (0x85).
        Ebusy = 0x85,
        /// Temporary failure; retry later (0x86).
        Etmpfail = 0x86,
        /// Unknown collection (0x88).
        UnknownCollection = 0x88,
        /// Manifest is ahead of the server's (0x8b).
        CannotApplyCollectionsManifest = 0x8b,
        /// Unknown scope (0x8c).
        UnknownScope = 0x8c,
        /// Stream id missing, present when not enabled, zero, or in use (0x8d).
        DcpStreamIdInvalid = 0x8d,
        /// Durability level invalid (0xa0).
        DurabilityInvalidLevel = 0xa0,
        /// Durability impossible (0xa1).
        DurabilityImpossible = 0xa1,
        /// A sync write is in progress on the key (0xa2).
        SyncWriteInProgress = 0xa2,
        /// Sync write outcome ambiguous (0xa3).
        SyncWriteAmbiguous = 0xa3,
    }
}

impl Status {
    /// Whether the status is [`Status::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Status::Success)
    }

    /// Whether the server means "try again later" (busy or temporary failure).
    pub const fn is_temporary(self) -> bool {
        matches!(self, Status::Ebusy | Status::Etmpfail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for raw in 0..=u16::MAX {
            assert_eq!(Status::from_raw(raw).raw(), raw);
        }
        assert_eq!(Status::from_raw(0x23), Status::Rollback);
        assert!(Status::Etmpfail.is_temporary());
        assert_eq!(Status::from_raw(0xff01), Status::Unknown(0xff01));
    }
}
