//! The gateway's own addresses and routes on the WireGuard interface, set with iproute2's `ip`.
//!
//! For every org the interface gets the org's `::1` (the gateway) and `::3` (the DNS resolver) as
//! /128s, and a route for the org's /48 through the interface whose preferred source is `::3`.
//! The preferred source matters: a DNS server bound to `[::]:53` answers from whatever source
//! address the kernel picks for the route back, and `dig` drops an answer that does not come from
//! the address it asked. With `src ::3` the answer comes from `::3`.
//!
//! **Only the tunnel reaches the orgs' addresses, and the tunnel reaches only its org** (issue
//! 22). Linux delivers a packet to a local address whatever interface it came in on, and the
//! `local` table is consulted first (rule 0): a LAN neighbour that routes an org's /48 to the
//! gateway would reach `::1` and `::3` (DNS, ping) and, with a forged source inside the /48, have
//! the answers sent into a node's tunnel; a node would reach another org's `::3` and every service
//! of the host. So the `local` rule moves from priority 0 to [`RULE_PREF_LOCAL`] (added there
//! first, then deleted at 0: the only thing this module ever removes), and in front of it:
//! - [`RULE_PREF_ACCEPT`]: from an org's /48 to the same /48 arriving on the interface (one rule
//!   per org), and the host's own packets (`iif lo`), go on to the `local` rule, as before;
//! - [`RULE_PREF_TUNNEL_REST`]: anything else arriving on the interface is refused (ICMPv6
//!   "administratively prohibited", to the node that sent it): another org's `::1`/`::3`, the
//!   host's other addresses;
//! - [`RULE_PREF_FENCE`]: anything else addressed to an org's /48 is dropped (`blackhole`: no
//!   ICMP error either, which would go to the forged source). That covers every port and
//!   protocol on `::1` and `::3`, and forwarding from the LAN into the tunnels.
//!
//! Other traffic sees no change: rules 30–33 sit where rule 0 was. The gateway's own connections
//! to nodes leave from `::3` (the route's source), so the answers come back in; one that binds
//! another local address explicitly gets no answer from the tunnel.
//!
//! Orgs are isolated from each other by the same rules: with IPv6 forwarding on, the kernel would
//! route a packet from one org's peer to another org's /48, and rule 31 refuses it. The older
//! pair that did this after the `local` table, [`RULE_PREF_ORG`] (from an org's /48 to the same
//! /48, one per org) and [`RULE_PREF_PROHIBIT`] (the rest of the interface), is still added: it
//! changes nothing behind rules 30–33, and keeps orgs apart on a host whose rule 0 came back.
//!
//! The state is read with `ip -json` and compared first ([`plan`] is pure), so a steady interface
//! costs three read-only `ip` commands per reconcile and nothing is ever removed but the `local`
//! rule at 0: addresses, routes and rules the gateway did not add are left alone.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde::Deserialize;
use tokio::process::Command;

/// What can go wrong running `ip`.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    /// `ip` could not be started.
    #[error("running `ip` (iproute2): {0}")]
    Spawn(std::io::Error),
    /// `ip` failed.
    #[error("`ip {args}` failed: {stderr}")]
    Failed {
        /// The arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `ip -json` printed something unexpected.
    #[error("parsing `ip {args}` output: {message}")]
    Parse {
        /// The arguments.
        args: String,
        /// The parser's message.
        message: String,
    },
}

/// The addresses one org needs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgAddrs {
    /// The org's /48.
    pub prefix: Ipv6Net,
    /// The gateway's address, `::1`.
    pub gateway: Ipv6Addr,
    /// The resolver's address, `::3`.
    pub dns: Ipv6Addr,
}

/// What the interface has now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// Whether the link is administratively up.
    pub up: bool,
    /// Its IPv6 addresses with prefix lengths.
    pub addrs: HashSet<(Ipv6Addr, u8)>,
    /// Its IPv6 routes: destination and preferred source.
    pub routes: HashSet<(Ipv6Net, Option<Ipv6Addr>)>,
    /// The host's IPv6 policy rules (those with selectors this module does not use left out).
    pub rules: HashSet<Rule>,
}

/// An IPv6 policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Its priority.
    pub pref: u32,
    /// `iif`: the interface packets arrive on (`lo` for the host's own), `None` for any.
    pub iif: Option<String>,
    /// `from`, `None` for all.
    pub from: Option<Ipv6Net>,
    /// `to`, `None` for all.
    pub to: Option<Ipv6Net>,
    /// `main`, `local` (`lookup` a table), `prohibit`, `blackhole`, `goto 33`: the table name
    /// or the action.
    pub action: String,
}

impl Rule {
    fn new(
        pref: u32,
        iif: Option<&str>,
        from: Option<Ipv6Net>,
        to: Option<Ipv6Net>,
        action: &str,
    ) -> Rule {
        Rule {
            pref,
            iif: iif.map(str::to_owned),
            from,
            to,
            action: action.to_owned(),
        }
    }

    /// The `ip` arguments that add it.
    fn add(&self) -> Vec<String> {
        let mut cmd = vec!["-6".to_owned(), "rule".to_owned(), "add".to_owned()];
        cmd.extend(["pref".to_owned(), self.pref.to_string()]);
        if let Some(iif) = &self.iif {
            cmd.extend(["iif".to_owned(), iif.clone()]);
        }
        if let Some(from) = self.from {
            cmd.extend(["from".to_owned(), from.to_string()]);
        }
        if let Some(to) = self.to {
            cmd.extend(["to".to_owned(), to.to_string()]);
        }
        match self.action.as_str() {
            "main" | "local" => cmd.extend(["lookup".to_owned(), self.action.clone()]),
            other => cmd.extend(other.split(' ').map(str::to_owned)),
        }
        cmd
    }
}

/// Priority of the rules that send an org's own traffic on the interface (one per org), and the
/// host's own packets (`iif lo`), on to the `local` rule.
pub const RULE_PREF_ACCEPT: u32 = 30;
/// Priority of the rule refusing whatever else arrives on the interface.
pub const RULE_PREF_TUNNEL_REST: u32 = 31;
/// Priority of the per-org rules dropping whatever else is addressed to an org's /48.
pub const RULE_PREF_FENCE: u32 = 32;
/// Priority the `local` rule moves to (from 0).
pub const RULE_PREF_LOCAL: u32 = 33;

/// Priority of the per-org rules: from the org's /48 to the same /48, look up `main`.
pub const RULE_PREF_ORG: u32 = 31000;
/// Priority of the rule refusing whatever else arrives on the interface.
pub const RULE_PREF_PROHIBIT: u32 = 31001;

/// The `ip` invocations that bring `state` to what `orgs` need. Never removes anything but the
/// `local` rule at priority 0, once it is in place at [`RULE_PREF_LOCAL`] and fenced.
pub fn plan(iface: &str, state: &LinkState, orgs: &[OrgAddrs]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    let s = |v: &str| v.to_owned();
    let add_rule = |cmds: &mut Vec<Vec<String>>, rule: Rule| {
        if !state.rules.contains(&rule) {
            cmds.push(rule.add());
        }
    };
    // The fence first, before any address exists: `local` at its new place, the orgs' own
    // traffic on the tunnel and the host's packets sent on to it, the rest of the tunnel refused
    // (after the orgs' rules, so no org's traffic is ever refused), the orgs' /48s dropped for
    // every other interface.
    let goto_local = format!("goto {RULE_PREF_LOCAL}");
    add_rule(
        &mut cmds,
        Rule::new(RULE_PREF_LOCAL, None, None, None, "local"),
    );
    add_rule(
        &mut cmds,
        Rule::new(RULE_PREF_ACCEPT, Some("lo"), None, None, &goto_local),
    );
    for org in orgs {
        let prefix = org.prefix.trunc();
        add_rule(
            &mut cmds,
            Rule::new(
                RULE_PREF_ACCEPT,
                Some(iface),
                Some(prefix),
                Some(prefix),
                &goto_local,
            ),
        );
    }
    add_rule(
        &mut cmds,
        Rule::new(RULE_PREF_TUNNEL_REST, Some(iface), None, None, "prohibit"),
    );
    for org in orgs {
        let prefix = org.prefix.trunc();
        add_rule(
            &mut cmds,
            Rule::new(RULE_PREF_FENCE, None, None, Some(prefix), "blackhole"),
        );
    }
    if state
        .rules
        .contains(&Rule::new(0, None, None, None, "local"))
    {
        cmds.push(vec![
            s("-6"),
            s("rule"),
            s("del"),
            s("pref"),
            s("0"),
            s("lookup"),
            s("local"),
        ]);
    }
    for org in orgs {
        for addr in [org.gateway, org.dns] {
            if !state.addrs.contains(&(addr, 128)) {
                // `nodad`: the addresses are ours alone, and a tentative address cannot be a
                // route's preferred source.
                cmds.push(vec![
                    s("-6"),
                    s("addr"),
                    s("add"),
                    format!("{addr}/128"),
                    s("dev"),
                    s(iface),
                    s("nodad"),
                ]);
            }
        }
    }
    if !state.up {
        cmds.push(vec![s("link"), s("set"), s("dev"), s(iface), s("up")]);
    }
    for org in orgs {
        let prefix = org.prefix.trunc();
        if !state.routes.contains(&(prefix, Some(org.dns))) {
            cmds.push(vec![
                s("-6"),
                s("route"),
                s("replace"),
                prefix.to_string(),
                s("dev"),
                s(iface),
                s("src"),
                org.dns.to_string(),
            ]);
        }
    }
    for org in orgs {
        let prefix = org.prefix.trunc();
        add_rule(
            &mut cmds,
            Rule::new(
                RULE_PREF_ORG,
                Some(iface),
                Some(prefix),
                Some(prefix),
                "main",
            ),
        );
    }
    // Last, so an org's own traffic is never refused while its rule is being added.
    add_rule(
        &mut cmds,
        Rule::new(RULE_PREF_PROHIBIT, Some(iface), None, None, "prohibit"),
    );
    cmds
}

#[derive(Deserialize)]
struct JsonRule {
    priority: u32,
    src: Option<String>,
    srclen: Option<u8>,
    dst: Option<String>,
    dstlen: Option<u8>,
    iif: Option<String>,
    table: Option<String>,
    action: Option<String>,
    goto: Option<u32>,
    /// Selectors this module never sets (`fwmark`, `oif`, `not`, ...): such a rule is not ours.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Parses `ip -json -6 rule show`, keeping the rules made only of the selectors this module
/// uses.
fn parse_rules(json: &str, state: &mut LinkState) -> Result<(), String> {
    let rules: Vec<JsonRule> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let net = |addr: Option<String>, len: Option<u8>| -> Option<Ipv6Net> {
        let addr = addr?.parse::<Ipv6Addr>().ok()?;
        Ipv6Net::new(addr, len.unwrap_or(128)).ok()
    };
    for mut r in rules {
        // Said of a `goto` whose target is missing, of an `iif` that does not exist (yet), and
        // of the protocol that added the rule: none changes what the rule is.
        for key in ["unresolved", "iif_detached", "protocol"] {
            r.other.remove(key);
        }
        if !r.other.is_empty() {
            continue;
        }
        let goto = r.goto.map(|pref| format!("goto {pref}"));
        let Some(action) = r.action.filter(|a| a != "goto").or(goto).or(r.table) else {
            continue;
        };
        state.rules.insert(Rule {
            pref: r.priority,
            iif: r.iif,
            from: net(r.src, r.srclen),
            to: net(r.dst, r.dstlen),
            action,
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct JsonLink {
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    addr_info: Vec<JsonAddr>,
}

#[derive(Deserialize)]
struct JsonAddr {
    #[serde(default)]
    family: String,
    local: Option<String>,
    prefixlen: Option<u8>,
}

#[derive(Deserialize)]
struct JsonRoute {
    dst: String,
    prefsrc: Option<String>,
}

/// Parses `ip -json -6 addr show dev X` (which also carries the link flags).
fn parse_addrs(json: &str, state: &mut LinkState) -> Result<(), String> {
    let links: Vec<JsonLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    for link in links {
        state.up |= link.flags.iter().any(|f| f == "UP");
        for a in link.addr_info {
            if a.family != "inet6" {
                continue;
            }
            if let (Some(local), Some(len)) = (a.local, a.prefixlen)
                && let Ok(addr) = local.parse::<Ipv6Addr>()
            {
                state.addrs.insert((addr, len));
            }
        }
    }
    Ok(())
}

/// Parses `ip -json -6 route show dev X`.
fn parse_routes(json: &str, state: &mut LinkState) -> Result<(), String> {
    let routes: Vec<JsonRoute> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    for r in routes {
        // A host route prints without a prefix length.
        let dst = if r.dst.contains('/') {
            r.dst.parse::<Ipv6Net>().ok()
        } else {
            r.dst.parse::<Ipv6Addr>().ok().map(Ipv6Net::from)
        };
        let Some(dst) = dst else { continue };
        let src = r.prefsrc.and_then(|s| s.parse().ok());
        state.routes.insert((dst, src));
    }
    Ok(())
}

async fn run(args: &[String]) -> Result<String, NetifError> {
    let out = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(NetifError::Spawn)?;
    if !out.status.success() {
        return Err(NetifError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads the interface's link flag, IPv6 addresses, IPv6 routes and the IPv6 rules for it.
///
/// # Errors
/// [`NetifError`] when `ip` fails (e.g. no such interface) or prints something unexpected.
pub async fn read(iface: &str) -> Result<LinkState, NetifError> {
    let mut state = LinkState::default();
    let parse_err = |args: &[&str], message| NetifError::Parse {
        args: args.join(" "),
        message,
    };
    let args = ["-json", "-6", "addr", "show", "dev", iface];
    parse_addrs(&run(&owned(&args)).await?, &mut state).map_err(|m| parse_err(&args, m))?;
    let args = ["-json", "-6", "route", "show", "dev", iface];
    parse_routes(&run(&owned(&args)).await?, &mut state).map_err(|m| parse_err(&args, m))?;
    let args = ["-json", "-6", "rule", "show"];
    parse_rules(&run(&owned(&args)).await?, &mut state).map_err(|m| parse_err(&args, m))?;
    Ok(state)
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Brings the interface's addresses, link state, routes and rules to what `orgs` need; returns the
/// commands it ran (for the log).
///
/// # Errors
/// [`NetifError`] from the first command that failed.
pub async fn ensure(iface: &str, orgs: &[OrgAddrs]) -> Result<Vec<String>, NetifError> {
    let state = read(iface).await?;
    let mut done = Vec::new();
    for cmd in plan(iface, &state, orgs) {
        run(&cmd).await?;
        done.push(format!("ip {}", cmd.join(" ")));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(p: &str) -> OrgAddrs {
        let prefix: Ipv6Net = p.parse().unwrap();
        OrgAddrs {
            prefix,
            gateway: crate::model::prefix_host(prefix, 1),
            dns: crate::model::prefix_host(prefix, 3),
        }
    }

    #[test]
    fn parses_ip_json() {
        let mut state = LinkState::default();
        parse_addrs(
            r#"[{"ifindex":5,"ifname":"wg0","flags":["POINTOPOINT","NOARP","UP","LOWER_UP"],"mtu":1420,
            "addr_info":[{"family":"inet6","local":"fdaa:0:1::1","prefixlen":128,"scope":"global"},
            {"family":"inet6","local":"fdaa:0:1::3","prefixlen":128,"scope":"global"}]}]"#,
            &mut state,
        )
        .unwrap();
        parse_routes(
            r#"[{"dst":"fdaa:0:1::/48","dev":"wg0","prefsrc":"fdaa:0:1::3","metric":1024,"flags":[]},
            {"dst":"fdaa:0:1::1","dev":"wg0","protocol":"kernel","flags":[]}]"#,
            &mut state,
        )
        .unwrap();
        // Another interface's rules, and one with a selector we never set, are kept apart.
        let mut rules = r#"[{"priority":30,"src":"all","iif":"lo","goto":33},
            {"priority":30,"src":"fdaa:0:1::","srclen":48,"dst":"fdaa:0:1::","dstlen":48,"iif":"wg0","goto":33},
            {"priority":31,"src":"all","iif":"wg0","action":"prohibit"},
            {"priority":32,"src":"all","dst":"fdaa:0:1::","dstlen":48,"action":"blackhole"},
            {"priority":33,"src":"all","table":"local"},
            {"priority":31000,"src":"fdaa:0:1::","srclen":48,"dst":"fdaa:0:1::","dstlen":48,"iif":"wg0","table":"main"},
            {"priority":31000,"src":"fdaa:0:9::","srclen":48,"dst":"fdaa:0:9::","dstlen":48,"iif":"wg1","table":"main"},
            {"priority":31001,"src":"all","iif":"wg0","iif_detached":null,"action":"prohibit"},
            {"priority":32000,"src":"all","fwmark":"0x1","table":"local"},
            {"priority":32766,"src":"all","table":"main"}]"#
            .to_owned();
        parse_rules(&rules, &mut state).unwrap();
        assert_eq!(state.rules.len(), 9, "{:?}", state.rules);
        assert!(
            !state.rules.iter().any(|r| r.pref == 32000),
            "a rule with a fwmark is not ours: {:?}",
            state.rules
        );
        assert!(state.up);
        assert!(state.addrs.contains(&("fdaa:0:1::1".parse().unwrap(), 128)));
        assert!(state.routes.contains(&(
            "fdaa:0:1::/48".parse().unwrap(),
            Some("fdaa:0:1::3".parse().unwrap())
        )));
        // And the plan for that state is empty.
        assert_eq!(
            plan("wg0", &state, &[org("fdaa:0:1::/48")]),
            Vec::<Vec<String>>::new()
        );
        // With the kernel's `local` rule still at 0, the plan deletes it (and only that).
        rules.insert_str(1, r#"{"priority":0,"src":"all","table":"local"},"#);
        parse_rules(&rules, &mut state).unwrap();
        assert_eq!(
            plan("wg0", &state, &[org("fdaa:0:1::/48")]),
            vec![vec!["-6", "rule", "del", "pref", "0", "lookup", "local"]]
        );
        assert!(parse_routes("nope", &mut state).is_err());
        let mut empty = LinkState::default();
        parse_addrs("[]", &mut empty).unwrap();
        assert_eq!(empty, LinkState::default());
    }

    #[test]
    fn plans_what_is_missing() {
        let mut state = LinkState::default();
        state.addrs.insert(("fdaa:0:1::1".parse().unwrap(), 128));
        // A route without our preferred source is replaced.
        state
            .routes
            .insert(("fdaa:0:1::/48".parse().unwrap(), None));
        let cmds: Vec<String> = plan("wg0", &state, &[org("fdaa:0:1::/48")])
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            vec![
                "-6 rule add pref 33 lookup local",
                "-6 rule add pref 30 iif lo goto 33",
                "-6 rule add pref 30 iif wg0 from fdaa:0:1::/48 to fdaa:0:1::/48 goto 33",
                "-6 rule add pref 31 iif wg0 prohibit",
                "-6 rule add pref 32 to fdaa:0:1::/48 blackhole",
                "-6 addr add fdaa:0:1::3/128 dev wg0 nodad",
                "link set dev wg0 up",
                "-6 route replace fdaa:0:1::/48 dev wg0 src fdaa:0:1::3",
                "-6 rule add pref 31000 iif wg0 from fdaa:0:1::/48 to fdaa:0:1::/48 lookup main",
                "-6 rule add pref 31001 iif wg0 prohibit",
            ]
        );
    }
}
