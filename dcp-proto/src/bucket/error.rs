//! Why a write, a read or a fault injection on the bucket failed.

use crate::codec::Status;
use crate::msg::VbucketState;

/// A failed bucket operation. [`status`](BucketError::status) gives the
/// memcached status a server would answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// The vbucket id is out of range.
    #[error("vbucket {0} does not exist")]
    NoSuchVbucket(u16),
    /// The vbucket is not active here (writes and reads need an active one).
    #[error("vbucket {vbucket} is {state}, not active")]
    NotMyVbucket {
        /// The vbucket.
        vbucket: u16,
        /// Its state.
        state: VbucketState,
    },
    /// The vbucket is warming up (fault injection).
    #[error("vbucket {0} is warming up")]
    TemporaryFailure(u16),
    /// No live document has this key.
    #[error("key not found")]
    KeyNotFound,
    /// The key exists (ADD), or the CAS did not match.
    #[error("key exists, or CAS mismatch")]
    KeyExists,
    /// APPEND/PREPEND on a missing document.
    #[error("not stored: no such document")]
    NotStored,
    /// INCREMENT/DECREMENT on a value that is not a decimal number.
    #[error("the value is not a decimal number")]
    DeltaBadValue,
    /// The value is larger than the bucket allows.
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Malformed arguments (empty or over-long key, bad xattrs, CAS on ADD).
    #[error("invalid arguments: {0}")]
    Invalid(&'static str),
    /// A sync write of the key is in progress (its prepare is pending).
    #[error("a synchronous write of the key is in progress")]
    SyncWriteInProgress,
    /// The durability level is not one of the three known ones.
    #[error("invalid durability level")]
    DurabilityInvalidLevel,
    /// A vbucket state this model does not know.
    #[error("invalid vbucket state {0}")]
    InvalidState(VbucketState),
    /// No collection has this id (or it was dropped).
    #[error("unknown collection {0:#x}")]
    UnknownCollection(u32),
    /// No collection has this `scope.collection` name.
    #[error("unknown collection {0}")]
    UnknownCollectionName(String),
    /// No scope has this name.
    #[error("unknown scope {0}")]
    UnknownScope(String),
    /// A collection of this name exists in the scope.
    #[error("collection {0} exists")]
    CollectionExists(String),
    /// A scope of this name exists.
    #[error("scope {0} exists")]
    ScopeExists(String),
    /// Not a valid scope or collection name.
    #[error("invalid scope or collection name {0:?}")]
    InvalidName(String),
}

impl BucketError {
    /// The status a data node answers with.
    pub fn status(&self) -> Status {
        match self {
            BucketError::NoSuchVbucket(_) | BucketError::NotMyVbucket { .. } => {
                Status::NotMyVbucket
            }
            BucketError::TemporaryFailure(_) => Status::Etmpfail,
            BucketError::KeyNotFound => Status::KeyEnoent,
            BucketError::KeyExists => Status::KeyEexists,
            BucketError::NotStored => Status::NotStored,
            BucketError::DeltaBadValue => Status::DeltaBadval,
            BucketError::ValueTooLarge { .. } => Status::E2big,
            BucketError::Invalid(_) | BucketError::InvalidState(_) => Status::Einval,
            BucketError::SyncWriteInProgress => Status::SyncWriteInProgress,
            BucketError::DurabilityInvalidLevel => Status::DurabilityInvalidLevel,
            BucketError::UnknownCollection(_) | BucketError::UnknownCollectionName(_) => {
                Status::UnknownCollection
            }
            BucketError::UnknownScope(_) => Status::UnknownScope,
            BucketError::CollectionExists(_) | BucketError::ScopeExists(_) => Status::KeyEexists,
            BucketError::InvalidName(_) => Status::Einval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(BucketError::KeyExists.status(), Status::KeyEexists);
        assert_eq!(BucketError::NoSuchVbucket(9).status(), Status::NotMyVbucket);
        assert_eq!(BucketError::NotStored.status(), Status::NotStored);
        assert_eq!(
            BucketError::ValueTooLarge { len: 2, max: 1 }.to_string(),
            "value of 2 bytes exceeds the maximum of 1"
        );
    }
}
