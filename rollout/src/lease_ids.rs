//! The spelling of lease and group ids, a contract between the coordinator (which writes
//! them) and the learner (which reads a group's lease sequence to forget settled groups): a
//! lease is `lease-<seq>` (seq counts from 1, without leading zeros or a sign), and a group
//! first leased in it is `lease-<seq>/<problem id>`, an id it keeps when leased again.

/// The id of the lease with sequence number `seq`.
pub fn lease_id(seq: u64) -> String {
    format!("lease-{seq}")
}

/// The sequence number of a lease id; None for anything but the canonical spelling
/// (`lease-01` and `lease-+1` name no lease).
pub fn lease_seq(lease_id: &str) -> Option<u64> {
    let digits = lease_id.strip_prefix("lease-")?;
    if digits.starts_with(['0', '+']) {
        return None;
    }
    digits.parse().ok()
}

/// The sequence number of the lease a group id was first issued in.
pub fn group_lease_seq(group_id: &str) -> Option<u64> {
    let (lease, _) = group_id.split_once('/')?;
    lease_seq(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_names_a_lease() {
        assert_eq!(lease_seq(&lease_id(17)), Some(17));
        for bad in [
            "lease-01",
            "lease-+1",
            "lease-",
            "lease-x",
            "17",
            "lease-1/p",
        ] {
            assert_eq!(lease_seq(bad), None, "{bad}");
        }
        assert_eq!(group_lease_seq("lease-3/addition-2/train/5"), Some(3));
        assert_eq!(group_lease_seq("g/5"), None);
        assert_eq!(group_lease_seq("lease-3"), None);
    }
}
