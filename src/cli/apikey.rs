//! `sixpn apikey create|list|revoke` (issue 16): API keys through the admin API. The key is
//! printed once, by `create`, as `SIXPN_API_KEY=…`; nothing else ever shows one.

use reqwest::Method;

use super::admin::{admin_client, asks, confirm};
use super::node::request_body;
use super::output::{print, print_typed, text};
use super::pages::{Listing, print_all};
use super::{ApiKeyCommand, ApiKeyCreateArgs};
use crate::api::types::{ApiKeyCreate, ApiKeyJson, ApiKeyRevokedJson, CreatedApiKey};
use anyhow::bail;

/// Runs `sixpn apikey …`.
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn run(command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create(args) => create(args).await,
        ApiKeyCommand::Attenuate(args) => super::attenuate::api_key(args),
        ApiKeyCommand::List { admin, json, page } => {
            let client = admin_client(&admin)?;
            let row = |k: &ApiKeyJson| {
                vec![
                    text(Some(&k.name), "-"),
                    text(Some(&k.org), "-"),
                    text(Some(&k.role), "-"),
                    text(k.expires_at.as_deref(), "never"),
                    text(Some(&k.created_by), "-"),
                    text(k.last_used_at.as_deref(), "never"),
                ]
            };
            let listing = Listing {
                headers: &["NAME", "ORG", "ROLE", "EXPIRES", "CREATED BY", "LAST USED"],
                row: &row,
            };
            let n = print_all(&client, "api/v1/api_keys", &page, json.json, listing).await?;
            if n == 0 && !json.json {
                eprintln!(
                    "no API keys you may see; create one with `sixpn apikey create --name NAME --org ORG --role ROLE`"
                );
            }
            Ok(())
        }
        ApiKeyCommand::Revoke {
            name,
            yes,
            admin,
            json,
        } => {
            let client = admin_client(&admin)?;
            if asks(yes.yes) {
                confirm(
                    &format!("revoke API key {name}? Every replica refuses it from then on."),
                    &mut std::io::stdin().lock(),
                )?;
            }
            let path = format!("api/v1/api_keys/{name}");
            let answer: ApiKeyRevokedJson = client.send_typed(Method::DELETE, &path, None).await?;
            if json.json {
                return print_typed(&answer);
            }
            print(&format!("revoked API key {}\n", answer.revoked))
        }
    }
}

/// Whether `key` has an API key's form (`sixpn_ak_` and 64 lowercase hex digits), so it prints
/// as one plain shell word.
fn is_key_shaped(key: &str) -> bool {
    key.strip_prefix("sixpn_ak_").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `sixpn apikey create`: prints the key once, as `SIXPN_API_KEY=…`.
async fn create(args: ApiKeyCreateArgs) -> anyhow::Result<()> {
    let ApiKeyCreateArgs {
        name,
        org,
        role,
        expires,
        admin,
        json,
    } = args;
    let client = admin_client(&admin)?;
    let body = request_body(&ApiKeyCreate {
        name: name.clone(),
        org,
        role,
        expires_in: expires.map(|d| d.as_secs()),
    })?;
    let created: CreatedApiKey = client
        .send_typed(Method::POST, "api/v1/api_keys", Some(&body))
        .await?;
    let key = created.key.as_str();
    // Printed as a shell assignment: it must be one plain word of the key's form.
    if !is_key_shaped(key) {
        bail!(
            "the server at {} created API key {name} but answered something that is not one; revoke it with `sixpn apikey revoke {name}` and report this",
            client.base_url()
        );
    }
    if json.json {
        return print_typed(&created);
    }
    print(&format!("SIXPN_API_KEY={key}\n"))?;
    eprintln!(
        "created API key {} ({} of {}, expires {}); the key above is shown only this once",
        created.info.name,
        created.info.role,
        created.info.org,
        text(created.info.expires_at.as_deref(), "never"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_and_the_store_agree_on_the_key_form() {
        for _ in 0..5 {
            let key = crate::store::ApiKeySecret::generate();
            assert!(super::is_key_shaped(key.expose()));
        }
        assert!(!super::is_key_shaped("sixpn_ak_x y"));
    }
}
