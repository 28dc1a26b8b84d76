//! The links microchat mails (email verification, password reset), read from the mail
//! files of the all-in-one as a user reads them in their mail client.

use super::TestApp;
use reqwest::{Client, StatusCode};
use serde_json::json;
use std::{collections::BTreeSet, time::Duration};

/// The page a verification link opens.
pub const VERIFY_PAGE: &str = "/verify-email";
/// The page a reset link opens.
pub const RESET_PAGE: &str = "/reset-password";

/// The tokens of links to `page` in a mail's text (`{page}#token=<token>`).
pub fn tokens_in(text: &str, page: &str) -> Vec<String> {
    let marker = format!("{page}#token=");
    text.match_indices(&marker)
        .map(|(at, _)| {
            text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .collect()
}

impl TestApp {
    /// The mails written so far, decoded (quoted-printable and all), in no set order.
    pub fn mails(&self) -> Vec<frontend::mailbox::Mail> {
        let dir = self.data_dir.join("mail");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
            .filter_map(|entry| {
                let raw = std::fs::read(entry.path()).ok()?;
                let name = entry.file_name().to_string_lossy().into_owned();
                Some(frontend::mailbox::parse(&name, &raw))
            })
            .collect()
    }

    /// The mails to `address`.
    pub fn mails_to(&self, address: &str) -> Vec<frontend::mailbox::Mail> {
        self.mails()
            .into_iter()
            .filter(|mail| mail.to.contains(address))
            .collect()
    }

    /// Every token of links to `page` mailed to `address` so far.
    pub fn link_tokens(&self, address: &str, page: &str) -> BTreeSet<String> {
        self.mails_to(address)
            .iter()
            .flat_map(|mail| tokens_in(&mail.text, page))
            .collect()
    }

    /// Waits for a link to `page` mailed to `address` that is not in `seen`.
    pub async fn new_link_token(
        &self,
        address: &str,
        page: &str,
        seen: &BTreeSet<String>,
    ) -> String {
        for _ in 0..200 {
            if let Some(token) = self
                .link_tokens(address, page)
                .into_iter()
                .find(|token| !seen.contains(token))
            {
                return token;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no new {page} link was mailed to {address}");
    }

    /// Opens the verification link of the registration mail to `address`.
    pub async fn verify_address(&self, address: &str) {
        let token = self
            .new_link_token(address, VERIFY_PAGE, &BTreeSet::new())
            .await;
        let verified = Client::new()
            .post(self.url("/api/auth/email/verify"))
            .json(&json!({ "token": token }))
            .send()
            .await
            .expect("the broker answers");
        assert_eq!(verified.status(), StatusCode::OK, "verify {address}");
    }
}
