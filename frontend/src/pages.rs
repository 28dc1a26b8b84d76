//! The HTML pages: one layout (landmarks, navigation, the broker's origin in a `<meta>`)
//! around each page's main content. Interactive pages are static shells filled by their
//! ES module; the dev mailbox is rendered here, every mail field escaped.

use crate::{config::BrokerOrigin, mailbox::Mail};

/// What every page needs to know about the site.
#[derive(Debug, Clone)]
pub struct Site {
    /// The broker the scripts talk to.
    pub broker: BrokerOrigin,
    /// Whether the dev mailbox is on (it gets a navigation link).
    pub mailbox: bool,
}

/// Navigation: (page id, href, label, shown when signed `in`, `out`, `any`, or to
/// `admin`s — a convenience only: the broker refuses everyone else).
const NAV: [(&str, &str, &str, &str); 7] = [
    ("chat", "/chat", "Chat", "in"),
    ("account", "/account", "Account", "in"),
    ("logs", "/logs", "Logs", "admin"),
    ("admin", "/admin", "People", "admin"),
    ("mailbox", "/dev/mailbox", "Mailbox", "any"),
    ("login", "/login", "Sign in", "out"),
    ("register", "/register", "Register", "out"),
];

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render(site: &Site, page: &str, title: &str, script: Option<&str>, main: &str) -> String {
    let nav: String = NAV
        .iter()
        .filter(|(id, ..)| *id != "mailbox" || site.mailbox)
        .map(|(id, href, label, show)| {
            let current = if *id == page {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<li data-show="{show}"><a href="{href}"{current}>{label}</a></li>"#)
        })
        .collect();
    let script = script
        .map(|name| format!(r#"<script type="module" src="/assets/js/{name}"></script>"#))
        .unwrap_or_default();
    include_str!("../assets/pages/layout.html")
        .replace("{{title}}", &escape(title))
        .replace("{{broker}}", &escape(&site.broker.http))
        .replace("{{page}}", page)
        .replace("{{nav}}", &nav)
        .replace("{{script}}", &script)
        // Last: the main content may hold escaped text of mails, never re-read.
        .replace("{{main}}", main)
}

/// `/register`
pub fn register(site: &Site) -> String {
    let main = include_str!("../assets/pages/register.html");
    render(site, "register", "Create an account", Some("auth.js"), main)
}

/// `/login`
pub fn login(site: &Site) -> String {
    let main = include_str!("../assets/pages/login.html");
    render(site, "login", "Sign in", Some("auth.js"), main)
}

/// `/chat`
pub fn chat(site: &Site) -> String {
    let main = include_str!("../assets/pages/chat.html");
    render(site, "chat", "Chat", Some("chat.js"), main)
}

/// `/account`
pub fn account(site: &Site) -> String {
    let main = include_str!("../assets/pages/account.html");
    render(site, "account", "Your account", Some("account.js"), main)
}

/// `/logs`
pub fn logs(site: &Site) -> String {
    let main = include_str!("../assets/pages/logs.html");
    render(site, "logs", "Logs", Some("logs.js"), main)
}

/// `/admin`: accounts, roles and deactivation, for administrators.
pub fn admin(site: &Site) -> String {
    let main = include_str!("../assets/pages/admin.html");
    render(site, "admin", "People", Some("admin.js"), main)
}

/// `/account/password`
pub fn change_password(site: &Site) -> String {
    let main = include_str!("../assets/pages/password.html");
    render(
        site,
        "change-password",
        "Change your password",
        Some("passwords.js"),
        main,
    )
}

/// `/forgot-password`
pub fn forgot_password(site: &Site) -> String {
    let main = include_str!("../assets/pages/forgot.html");
    render(
        site,
        "forgot-password",
        "Forgot your password?",
        Some("passwords.js"),
        main,
    )
}

/// `/reset-password` (the token is in the URL fragment, read by the script)
pub fn reset_password(site: &Site) -> String {
    let main = include_str!("../assets/pages/reset.html");
    render(
        site,
        "reset-password",
        "Choose a new password",
        Some("passwords.js"),
        main,
    )
}

/// `/account/sessions`
pub fn sessions(site: &Site) -> String {
    let main = include_str!("../assets/pages/sessions.html");
    render(
        site,
        "sessions",
        "Your sessions",
        Some("passwords.js"),
        main,
    )
}

/// `/verify-email` (the token is in the URL fragment, read by the script)
pub fn verify_email(site: &Site) -> String {
    let main = include_str!("../assets/pages/verify.html");
    render(
        site,
        "verify-email",
        "Confirm your email address",
        Some("passwords.js"),
        main,
    )
}

/// A 404 page, with an explanation.
pub fn not_found(site: &Site, detail: Option<&str>) -> String {
    let detail = escape(detail.unwrap_or("There is nothing at this address."));
    let main = format!(
        r#"<section class="card narrow"><h1>Not found</h1><p>{detail}</p><p><a href="/chat">Go to the chat</a></p></section>"#
    );
    render(site, "none", "Not found", Some("page.js"), &main)
}

/// A page saying the caller may not see this (a 401 or 403), with a way to log in.
pub fn forbidden(site: &Site, detail: &str) -> String {
    let main = format!(
        r#"<section class="card narrow"><h1>Not for you</h1><p>{}</p><p><a href="/login">Log in</a> · <a href="/chat">Go to the chat</a></p></section>"#,
        escape(detail)
    );
    render(site, "none", "Not for you", Some("page.js"), &main)
}

/// A page saying something went wrong.
pub fn error(site: &Site, detail: &str) -> String {
    let main = format!(
        r#"<section class="card narrow"><h1>Something went wrong</h1><p>{}</p></section>"#,
        escape(detail)
    );
    render(site, "none", "Error", Some("page.js"), &main)
}

fn mail_meta(mail: &Mail) -> String {
    format!(
        r#"<dl class="mail-meta"><div><dt>To</dt><dd>{to}</dd></div><div><dt>From</dt><dd>{from}</dd></div><div><dt>Date</dt><dd>{date}</dd></div></dl>"#,
        to = escape(&mail.to),
        from = escape(&mail.from),
        date = escape(&mail.date),
    )
}

/// `/dev/mailbox`: every mail, newest first, with its text part.
pub fn mailbox(site: &Site, mails: &[Mail]) -> String {
    let mut main = String::from(
        r#"<section class="card wide" aria-labelledby="mailbox-title"><h1 id="mailbox-title">Dev mailbox</h1>
<p class="hint">Mail the services sent, as the <code>.eml</code> files of the mail directory, newest first.</p>"#,
    );
    if mails.is_empty() {
        main.push_str(r#"<p class="empty">No mail yet.</p>"#);
    } else {
        main.push_str(&format!(
            r#"<p class="count">{} mail{}</p><ol class="mail-list">"#,
            mails.len(),
            if mails.len() == 1 { "" } else { "s" }
        ));
        for mail in mails {
            main.push_str(&format!(
                r#"<li class="mail"><article aria-labelledby="m-{id}"><h2 id="m-{id}"><a href="/dev/mailbox/{name}">{subject}</a></h2>{meta}<pre class="mail-text">{text}</pre></article></li>"#,
                id = escape(mail.name.trim_end_matches(".eml")),
                name = escape(&mail.name),
                subject = escape(&mail.subject),
                meta = mail_meta(mail),
                text = escape(&mail.text),
            ));
        }
        main.push_str("</ol>");
    }
    main.push_str("</section>");
    render(site, "mailbox", "Dev mailbox", Some("page.js"), &main)
}

/// `/dev/mailbox/{name}`: one mail.
pub fn mail(site: &Site, mail: &Mail) -> String {
    let main = format!(
        r#"<section class="card wide"><p><a href="/dev/mailbox">← All mail</a></p><article aria-labelledby="mail-title"><h1 id="mail-title">{subject}</h1>{meta}<pre class="mail-text">{text}</pre></article></section>"#,
        subject = escape(&mail.subject),
        meta = mail_meta(mail),
        text = escape(&mail.text),
    );
    render(site, "mailbox", &mail.subject, Some("page.js"), &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
