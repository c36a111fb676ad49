//! The datatype byte (header byte 5).

use core::fmt;

/// The datatype bits of a frame: JSON, Snappy and XATTR.
///
/// Unknown bits are kept (see [`Datatype::is_valid`]); whether a bit may be
/// used depends on what HELLO negotiated, which the codec does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Datatype(pub u8);

impl Datatype {
    /// Raw bytes (no bit set).
    pub const RAW: Datatype = Datatype(0);
    /// The value is JSON.
    pub const JSON: Datatype = Datatype(0x01);
    /// The whole value is Snappy-compressed.
    pub const SNAPPY: Datatype = Datatype(0x02);
    /// The value starts with an xattr section.
    pub const XATTR: Datatype = Datatype(0x04);
    /// All bits the protocol defines.
    pub const ALL: Datatype = Datatype(0x07);

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Datatype) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether only defined bits are set.
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL.0 == 0
    }

    /// Whether the JSON bit is set.
    pub const fn is_json(self) -> bool {
        self.contains(Self::JSON)
    }

    /// Whether the Snappy bit is set.
    pub const fn is_snappy(self) -> bool {
        self.contains(Self::SNAPPY)
    }

    /// Whether the XATTR bit is set.
    pub const fn is_xattr(self) -> bool {
        self.contains(Self::XATTR)
    }
}

impl core::ops::BitOr for Datatype {
    type Output = Datatype;
    fn bitor(self, rhs: Self) -> Self {
        Datatype(self.0 | rhs.0)
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("raw");
        }
        let mut first = true;
        for (bit, name) in [(0x01, "json"), (0x02, "snappy"), (0x04, "xattr")] {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if !self.is_valid() {
            write!(
                f,
                "{}unknown({:#04x})",
                if first { "" } else { "," },
                self.0 & !0x07
            )?;
        }
        Ok(())
    }
}
