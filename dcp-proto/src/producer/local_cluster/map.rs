//! The vbucket map of a [`LocalCluster`](super::LocalCluster): which node
//! holds each vbucket's active copy and which hold replicas.

use super::NodeId;

/// Where one vbucket lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Owners {
    /// The node with the active copy (`None` after a failover without a
    /// replica to promote).
    pub(crate) active: Option<NodeId>,
    /// The nodes with a replica copy, in promotion order.
    pub(crate) replicas: Vec<NodeId>,
}

impl Owners {
    /// Whether `node` holds a copy.
    pub(crate) fn holds(&self, node: NodeId) -> bool {
        self.active == Some(node) || self.replicas.contains(&node)
    }
}

/// Round-robin: vbucket `vb` active on `members[vb % n]`, replicas on the
/// next `replicas` members.
pub(crate) fn round_robin(members: &[NodeId], vbuckets: u16, replicas: usize) -> Vec<Owners> {
    let n = members.len();
    (0..usize::from(vbuckets))
        .map(|vb| {
            if n == 0 {
                return Owners::default();
            }
            let active = members.get(vb % n).copied();
            let replicas = (1..=replicas.min(n - 1))
                .filter_map(|k| members.get((vb + k) % n).copied())
                .collect();
            Owners { active, replicas }
        })
        .collect()
}

/// Tops `owners.replicas` up to `want` members that hold no copy yet,
/// preferring those after the active one, and drops replicas that left.
pub(crate) fn fill_replicas(owners: &mut Owners, members: &[NodeId], want: usize) {
    owners.replicas.retain(|r| members.contains(r));
    if let Some(active) = owners.active {
        owners.replicas.retain(|r| *r != active);
    }
    let start = owners
        .active
        .and_then(|a| members.iter().position(|m| *m == a))
        .unwrap_or(0);
    for k in 1..=members.len() {
        if owners.replicas.len() >= want {
            break;
        }
        if let Some(&candidate) = members.get((start + k) % members.len())
            && !owners.holds(candidate)
        {
            owners.replicas.push(candidate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_spreads_actives_and_replicas() {
        let members = [NodeId(0), NodeId(1), NodeId(2)];
        let map = round_robin(&members, 4, 1);
        assert_eq!(map[0].active, Some(NodeId(0)));
        assert_eq!(map[0].replicas, [NodeId(1)]);
        assert_eq!(map[3].active, Some(NodeId(0)));
        assert_eq!(map[2].replicas, [NodeId(0)]);
        let mut owners = Owners {
            active: Some(NodeId(1)),
            replicas: vec![NodeId(1), NodeId(7)],
        };
        fill_replicas(&mut owners, &members, 1);
        assert_eq!(owners.replicas, [NodeId(2)]);
    }
}
