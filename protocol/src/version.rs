//! The cluster protocol's version: what lets nodes of two builds run side by side during a
//! rolling upgrade.
//!
//! Every build speaks a range of protocol versions, [`ProtocolRange::BUILD`]. It writes the
//! newest into every bincode payload (envelopes, migration snapshots, control messages: the
//! leading byte of [`crate::codec`]) and announces its range in its membership record; it
//! reads any version in its range. Two nodes can work together when their ranges overlap;
//! a node refuses a peer whose range does not (`docs/upgrades.md` has the rules of what may
//! change between versions).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The newest cluster protocol version this build speaks (and writes).
pub const PROTOCOL_VERSION: u8 = 1;

/// The oldest cluster protocol version this build still reads and can work beside.
pub const OLDEST_PROTOCOL_VERSION: u8 = 1;

/// The protocol versions a node speaks, `oldest..=newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProtocolRange {
    /// The oldest version it reads and can work beside.
    pub oldest: u8,
    /// The newest version it speaks, the one it writes.
    pub newest: u8,
}

impl ProtocolRange {
    /// What this build speaks: [`OLDEST_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`].
    pub const BUILD: Self = Self {
        oldest: OLDEST_PROTOCOL_VERSION,
        newest: PROTOCOL_VERSION,
    };

    /// What builds from before protocol versions were announced speak: version 1 alone.
    pub const FIRST: Self = Self {
        oldest: 1,
        newest: 1,
    };

    /// The range `oldest..=newest`; `None` if it is empty or starts at 0.
    pub fn new(oldest: u8, newest: u8) -> Option<Self> {
        (oldest >= 1 && oldest <= newest).then_some(Self { oldest, newest })
    }

    /// Whether `version` is in the range.
    pub fn speaks(self, version: u8) -> bool {
        (self.oldest..=self.newest).contains(&version)
    }

    /// The newest version both ranges speak, `None` if they have none in common.
    pub fn common(self, other: Self) -> Option<u8> {
        let newest = self.newest.min(other.newest);
        (newest >= self.oldest.max(other.oldest)).then_some(newest)
    }

    /// Whether the two ranges have a version in common: nodes that speak them can work
    /// together.
    pub fn overlaps(self, other: Self) -> bool {
        self.common(other).is_some()
    }

    /// The default of a record field written by builds that announced no range.
    pub fn first() -> Self {
        Self::FIRST
    }
}

impl Default for ProtocolRange {
    fn default() -> Self {
        Self::BUILD
    }
}

impl fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oldest == self.newest {
            write!(f, "{}", self.newest)
        } else {
            write!(f, "{}-{}", self.oldest, self.newest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(oldest: u8, newest: u8) -> ProtocolRange {
        ProtocolRange::new(oldest, newest).unwrap()
    }

    #[test]
    fn overlapping_ranges_agree_on_the_newest_common_version() {
        assert_eq!(range(1, 1).common(range(1, 2)), Some(1));
        assert_eq!(range(1, 2).common(range(1, 2)), Some(2));
        assert_eq!(range(2, 3).common(range(1, 2)), Some(2));
        assert_eq!(range(1, 3).common(range(2, 2)), Some(2));
    }

    #[test]
    fn disjoint_ranges_have_nothing_in_common() {
        assert_eq!(range(1, 1).common(range(2, 2)), None);
        assert_eq!(range(3, 4).common(range(1, 2)), None);
        assert!(!range(1, 1).overlaps(range(2, 2)));
        assert!(range(1, 2).overlaps(range(2, 3)));
    }

    #[test]
    fn empty_and_zero_ranges_are_refused() {
        assert_eq!(ProtocolRange::new(2, 1), None);
        assert_eq!(ProtocolRange::new(0, 1), None);
    }

    #[test]
    fn the_build_speaks_what_it_writes() {
        assert!(ProtocolRange::BUILD.speaks(PROTOCOL_VERSION));
        assert!(ProtocolRange::BUILD.speaks(OLDEST_PROTOCOL_VERSION));
    }

    #[test]
    fn ranges_show_as_one_version_or_a_span() {
        assert_eq!(range(1, 1).to_string(), "1");
        assert_eq!(range(1, 2).to_string(), "1-2");
    }
}
