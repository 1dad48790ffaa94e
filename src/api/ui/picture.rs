//! The network picture of an org page: an SVG of regions → gateways → groups → peers, each
//! peer coloured live or idle, each group by how many of its members are live.
//!
//! Bounded whatever the org's size: it is drawn from the org's group summary (counts per region
//! and group, and each group's first members, see [`super::summary`]), never from the peers; at
//! most [`MAX_GROUPS`] groups per region and [`MAX_PEERS`] peers per group are drawn, the rest
//! summed up in a "+N more" node.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::esc;
use crate::model::Region;
use crate::store::{GroupMember, GroupSummary};

/// Groups drawn per region.
pub const MAX_GROUPS: usize = 12;
/// Peers drawn per group.
pub const MAX_PEERS: usize = 8;

const ROW: i32 = 22;
const COLS: [i32; 4] = [10, 170, 360, 550];
const BOX_W: i32 = 150;

const LIVE: &str = "#1a7f37";
const IDLE: &str = "#656d76";
const SOME: &str = "#9a6700";
const NONE: &str = "#cf222e";
const GATEWAY: &str = "#0550ae";

/// A region's groups: name → the group's summary.
type Groups<'a> = BTreeMap<&'a str, &'a GroupSummary>;

/// One drawn node.
fn node(out: &mut String, col: usize, y: i32, fill: &str, label: &str, title: &str) {
    let x = COLS[col];
    let _ = write!(
        out,
        "<g><title>{}</title><rect x=\"{x}\" y=\"{}\" width=\"{BOX_W}\" height=\"18\" rx=\"4\" \
         fill=\"{fill}\"/><text x=\"{}\" y=\"{}\" fill=\"#ffffff\" font-size=\"12\" \
         font-family=\"sans-serif\">{}</text></g>",
        esc(title),
        y - 13,
        x + 6,
        y,
        esc(&truncate(label, 22))
    );
}

fn edge(out: &mut String, from_col: usize, from_y: i32, to_col: usize, to_y: i32) {
    let _ = write!(
        out,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#d0d7de\"/>",
        COLS[from_col] + BOX_W,
        from_y - 4,
        COLS[to_col],
        to_y - 4
    );
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// The named members of the shown groups: group → (name, region, live), by name.
pub struct Members<'a> {
    by_group: BTreeMap<&'a str, Vec<(&'a str, &'a str, bool)>>,
}

impl<'a> Members<'a> {
    /// Indexes `members`; `live(last_seen_at)` says whether a member is live.
    pub fn new(members: &'a [GroupMember], live: impl Fn(Option<i64>) -> bool) -> Members<'a> {
        let mut by_group: BTreeMap<&str, Vec<(&str, &str, bool)>> = BTreeMap::new();
        for m in members {
            by_group.entry(m.group.as_str()).or_default().push((
                m.name.as_str(),
                m.region.as_str(),
                live(m.last_seen_at),
            ));
        }
        for list in by_group.values_mut() {
            list.sort_unstable();
        }
        Members { by_group }
    }

    /// The group's named members: (name, region, live), by name.
    pub fn of(&self, group: &str) -> impl Iterator<Item = (&'a str, &'a str, bool)> + '_ {
        self.by_group.get(group).into_iter().flatten().copied()
    }
}

/// The picture of an org's `groups` (per region) over `regions`, naming the `named` members.
pub fn render(regions: &[Region], groups: &[GroupSummary], named: &Members<'_>) -> String {
    // region → group → summary.
    let mut tree: BTreeMap<&str, Groups<'_>> = BTreeMap::new();
    for r in regions {
        tree.entry(r.code.as_str()).or_default();
    }
    for g in groups {
        // A group whose members are all gone since the summary was read is left out.
        if named.of(&g.group).next().is_none() {
            continue;
        }
        tree.entry(g.region.as_str())
            .or_default()
            .insert(g.group.as_str(), g);
    }
    let mut body = String::new();
    let mut y = 24;
    for (region, groups) in &tree {
        let region_y = y;
        let gateway = regions.iter().find(|r| r.code.as_str() == *region);
        let n_peers: u64 = groups.values().map(|g| g.members).sum();
        node(
            &mut body,
            0,
            region_y,
            "#57606a",
            region,
            &format!("region {region}: {n_peers} peers"),
        );
        edge(&mut body, 0, region_y, 1, region_y);
        match gateway {
            Some(g) => node(
                &mut body,
                1,
                region_y,
                GATEWAY,
                &g.endpoint(),
                &format!("gateway of {region}: {}", g.endpoint()),
            ),
            None => node(
                &mut body,
                1,
                region_y,
                NONE,
                "no gateway",
                &format!("region {region} is not configured on this server"),
            ),
        }
        if groups.is_empty() {
            y += ROW + 8;
            continue;
        }
        for (i, (group, summary)) in groups.iter().enumerate() {
            if i == MAX_GROUPS {
                edge(&mut body, 1, region_y, 2, y);
                node(
                    &mut body,
                    2,
                    y,
                    IDLE,
                    &format!("+{} more groups", groups.len() - MAX_GROUPS),
                    "more groups",
                );
                y += ROW;
                break;
            }
            let group_y = y;
            let (n_live, members) = (summary.live, summary.members);
            let fill = match n_live {
                0 => NONE,
                n if n == members => LIVE,
                _ => SOME,
            };
            edge(&mut body, 1, region_y, 2, group_y);
            node(
                &mut body,
                2,
                group_y,
                fill,
                &format!("{group} ({n_live}/{members})"),
                &format!("group {group}: {n_live} of {members} live"),
            );
            let here: Vec<(&str, bool)> = named
                .of(group)
                .filter(|(_, r, _)| *r == *region)
                .map(|(n, _, l)| (n, l))
                .collect();
            for (peer, is_live) in here.iter().take(MAX_PEERS) {
                edge(&mut body, 2, group_y, 3, y);
                let (fill, state) = if *is_live {
                    (LIVE, "live")
                } else {
                    (IDLE, "idle")
                };
                node(
                    &mut body,
                    3,
                    y,
                    fill,
                    peer,
                    &format!("peer {peer}: {state}"),
                );
                y += ROW;
            }
            let drawn = here.len().min(MAX_PEERS) as u64;
            if members > drawn {
                edge(&mut body, 2, group_y, 3, y);
                node(
                    &mut body,
                    3,
                    y,
                    IDLE,
                    &format!("+{} more", members - drawn),
                    "more peers",
                );
                y += ROW;
            }
        }
        y += 8;
    }
    let height = y + 4;
    let width = COLS[3] + BOX_W + 10;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-labelledby=\"net-title\" \
         viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">\
         <title id=\"net-title\">Regions, gateways, groups and peers of this org</title>{body}</svg>"
    )
}
