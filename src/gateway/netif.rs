//! The gateway's own addresses and routes on the WireGuard interface, set with iproute2's `ip`.
//!
//! For every org the interface gets the org's `::1` (the gateway) and `::3` (the DNS resolver) as
//! /128s, and a route for the org's /48 through the interface whose preferred source is `::3`.
//! The preferred source matters: a DNS server bound to `[::]:53` answers from whatever source
//! address the kernel picks for the route back, and `dig` drops an answer that does not come from
//! the address it asked. With `src ::3` the answer comes from `::3`.
//!
//! Orgs are isolated from each other: with IPv6 forwarding on, the kernel would route a packet
//! from one org's peer to another org's /48. Two policy rules per interface stop that: packets
//! that arrive on the interface are routed only from an org's /48 to the same /48
//! ([`RULE_PREF_ORG`], one rule per org), and everything else arriving there is refused with an
//! ICMPv6 "administratively prohibited" ([`RULE_PREF_PROHIBIT`]). Traffic to the gateway's own
//! addresses is delivered by the `local` table before these rules, and traffic the gateway sends
//! does not arrive on the interface, so neither is affected.
//!
//! The state is read with `ip -json` and compared first ([`plan`] is pure), so a steady interface
//! costs three read-only `ip` commands per reconcile and nothing is ever removed: addresses, routes and
//! rules the gateway did not add are left alone.

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
    /// The IPv6 policy rules for packets arriving on it.
    pub rules: HashSet<Rule>,
}

/// An IPv6 policy rule that matches packets arriving on the interface (`iif`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Its priority.
    pub pref: u32,
    /// `from`, `None` for all.
    pub from: Option<Ipv6Net>,
    /// `to`, `None` for all.
    pub to: Option<Ipv6Net>,
    /// `lookup main`, `prohibit`, ...: the table name or the action.
    pub action: String,
}

/// Priority of the per-org rules: from the org's /48 to the same /48, look up `main`.
pub const RULE_PREF_ORG: u32 = 31000;
/// Priority of the rule refusing whatever else arrives on the interface.
pub const RULE_PREF_PROHIBIT: u32 = 31001;

/// The `ip` invocations that bring `state` to what `orgs` need. Never removes anything.
pub fn plan(iface: &str, state: &LinkState, orgs: &[OrgAddrs]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    let s = |v: &str| v.to_owned();
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
        let rule = Rule {
            pref: RULE_PREF_ORG,
            from: Some(prefix),
            to: Some(prefix),
            action: "main".to_owned(),
        };
        if !state.rules.contains(&rule) {
            cmds.push(vec![
                s("-6"),
                s("rule"),
                s("add"),
                s("pref"),
                RULE_PREF_ORG.to_string(),
                s("iif"),
                s(iface),
                s("from"),
                prefix.to_string(),
                s("to"),
                prefix.to_string(),
                s("lookup"),
                s("main"),
            ]);
        }
    }
    // Last, so an org's own traffic is never refused while its rule is being added.
    let prohibit = Rule {
        pref: RULE_PREF_PROHIBIT,
        from: None,
        to: None,
        action: "prohibit".to_owned(),
    };
    if !state.rules.contains(&prohibit) {
        cmds.push(vec![
            s("-6"),
            s("rule"),
            s("add"),
            s("pref"),
            RULE_PREF_PROHIBIT.to_string(),
            s("iif"),
            s(iface),
            s("prohibit"),
        ]);
    }
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
}

/// Parses `ip -json -6 rule show`, keeping the rules with `iif <iface>`.
fn parse_rules(json: &str, iface: &str, state: &mut LinkState) -> Result<(), String> {
    let rules: Vec<JsonRule> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let net = |addr: Option<String>, len: Option<u8>| -> Option<Ipv6Net> {
        let addr = addr?.parse::<Ipv6Addr>().ok()?;
        Ipv6Net::new(addr, len.unwrap_or(128)).ok()
    };
    for r in rules {
        if r.iif.as_deref() != Some(iface) {
            continue;
        }
        let Some(action) = r.action.or(r.table) else {
            continue;
        };
        state.rules.insert(Rule {
            pref: r.priority,
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
    parse_rules(&run(&owned(&args)).await?, iface, &mut state).map_err(|m| parse_err(&args, m))?;
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
        parse_rules(
            r#"[{"priority":0,"src":"all","table":"local"},
            {"priority":31000,"src":"fdaa:0:1::","srclen":48,"dst":"fdaa:0:1::","dstlen":48,"iif":"wg0","table":"main"},
            {"priority":31000,"src":"fdaa:0:9::","srclen":48,"dst":"fdaa:0:9::","dstlen":48,"iif":"wg1","table":"main"},
            {"priority":31001,"src":"all","iif":"wg0","action":"prohibit"},
            {"priority":32766,"src":"all","table":"main"}]"#,
            "wg0",
            &mut state,
        )
        .unwrap();
        assert_eq!(state.rules.len(), 2, "only wg0's rules: {:?}", state.rules);
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
                "-6 addr add fdaa:0:1::3/128 dev wg0 nodad",
                "link set dev wg0 up",
                "-6 route replace fdaa:0:1::/48 dev wg0 src fdaa:0:1::3",
                "-6 rule add pref 31000 iif wg0 from fdaa:0:1::/48 to fdaa:0:1::/48 lookup main",
                "-6 rule add pref 31001 iif wg0 prohibit",
            ]
        );
    }
}
