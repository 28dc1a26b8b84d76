//! The mail templates, compiled into the binary: a subject, a plain-text part and an HTML
//! part each (minijinja; HTML is auto-escaped, text and subject are not, and a variable
//! the template uses but the caller did not give is an error, never an empty string).

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::HashMap;

/// One template: its name and the variables it needs.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// E.g. `welcome`.
    pub name: &'static str,
    /// The variables the caller must give (a template may treat some as optional).
    pub vars: &'static [&'static str],
    subject: &'static str,
    text: &'static str,
    html: &'static str,
}

/// Every template this service knows.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "welcome",
        vars: &["username"],
        subject: include_str!("../templates/welcome.subject.txt"),
        text: include_str!("../templates/welcome.txt"),
        html: include_str!("../templates/welcome.html"),
    },
    Template {
        name: "logout",
        vars: &["username", "at", "client_ip", "user_agent"],
        subject: include_str!("../templates/logout.subject.txt"),
        text: include_str!("../templates/logout.txt"),
        html: include_str!("../templates/logout.html"),
    },
    // The link that verifies an address (the registration mail carries one too).
    Template {
        name: "verify_email",
        vars: &["username", "email", "verify_url", "expires_at"],
        subject: include_str!("../templates/verify_email.subject.txt"),
        text: include_str!("../templates/verify_email.txt"),
        html: include_str!("../templates/verify_email.html"),
    },
    // A one-time password reset link (verified addresses only).
    Template {
        name: "password_reset",
        vars: &["username", "reset_url", "expires_at"],
        subject: include_str!("../templates/password_reset.subject.txt"),
        text: include_str!("../templates/password_reset.txt"),
        html: include_str!("../templates/password_reset.html"),
    },
    // The notice that a password changed, with a way back if it was not the user.
    Template {
        name: "password_changed",
        vars: &[
            "username",
            "at",
            "client_ip",
            "user_agent",
            "by_reset",
            "reset_url",
        ],
        subject: include_str!("../templates/password_changed.subject.txt"),
        text: include_str!("../templates/password_changed.txt"),
        html: include_str!("../templates/password_changed.html"),
    },
    // A message an administrator writes (the older `/handle` mail action).
    Template {
        name: "message",
        vars: &["subject", "message", "sender"],
        subject: include_str!("../templates/message.subject.txt"),
        text: include_str!("../templates/message.txt"),
        html: include_str!("../templates/message.html"),
    },
    // The mentions of a user who was offline, one digest per period (the listener's).
    // `mentions` is one line per mention; `more` how many did not fit.
    Template {
        name: "mention_digest",
        vars: &["username", "count", "mentions", "more", "chat_url"],
        subject: include_str!("../templates/mention_digest.subject.txt"),
        text: include_str!("../templates/mention_digest.txt"),
        html: include_str!("../templates/mention_digest.html"),
    },
];

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// No template has that name.
    #[error("no template named {0:?}")]
    UnknownTemplate(String),
    /// A variable the template needs is missing.
    #[error("template {template:?} needs the variable {var:?}")]
    MissingVar {
        /// The template.
        template: &'static str,
        /// The variable.
        var: &'static str,
    },
    /// The template failed (a bug in a template).
    #[error("template {0:?} failed: {1}")]
    Failed(&'static str, String),
}

/// The templates, parsed once.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        for template in TEMPLATES {
            for (part, source) in [
                ("subject.txt", template.subject),
                ("txt", template.text),
                ("html", template.html),
            ] {
                env.add_template_owned(format!("{}.{part}", template.name), source)
                    .expect("the compiled-in templates parse");
            }
        }
        Self { env }
    }
}

impl Templates {
    /// Renders `name` with `vars`.
    pub fn render(
        &self,
        name: &str,
        vars: &HashMap<String, String>,
    ) -> Result<Rendered, RenderError> {
        let template = TEMPLATES
            .iter()
            .find(|template| template.name == name)
            .ok_or_else(|| RenderError::UnknownTemplate(name.to_owned()))?;
        if let Some(var) = template.vars.iter().find(|var| !vars.contains_key(**var)) {
            return Err(RenderError::MissingVar {
                template: template.name,
                var,
            });
        }
        let render = |part: &str| {
            self.env
                .get_template(&format!("{}.{part}", template.name))
                .and_then(|compiled| compiled.render(vars))
                .map_err(|error| RenderError::Failed(template.name, error.to_string()))
        };
        Ok(Rendered {
            // A subject is one line, whatever a variable held.
            subject: render("subject.txt")?
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn welcome_names_the_user_in_every_part() {
        let mail = Templates::default()
            .render("welcome", &vars(&[("username", "ada")]))
            .expect("renders");
        assert_eq!(mail.subject, "Welcome to microchat, ada");
        assert!(mail.text.starts_with("Hi ada,"));
        assert!(mail.html.contains("Welcome to microchat, ada</h1>"));
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let mail = Templates::default()
            .render("welcome", &vars(&[("username", "<script>x</script>")]))
            .expect("renders");
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&lt;script&gt;"));
        assert!(mail.text.contains("<script>x</script>"));
    }

    #[test]
    fn logout_says_when_and_from_which_client() {
        let mail = Templates::default()
            .render(
                "logout",
                &vars(&[
                    ("username", "grace"),
                    ("at", "2026-11-24T10:00:00Z"),
                    ("client_ip", "203.0.113.9"),
                    ("user_agent", "Firefox/140"),
                ]),
            )
            .expect("renders");
        assert_eq!(mail.subject, "You signed out of microchat");
        for part in [&mail.text, &mail.html] {
            assert!(part.contains("2026-11-24T10:00:00Z"));
            assert!(part.contains("203.0.113.9"));
        }
        assert!(mail.text.contains("Firefox/140"));
        // HTML escaping writes the slash as an entity.
        assert!(mail.html.contains("Firefox&#x2f;140"), "{}", mail.html);
        let unknown = Templates::default()
            .render(
                "logout",
                &vars(&[
                    ("username", "grace"),
                    ("at", "now"),
                    ("client_ip", ""),
                    ("user_agent", ""),
                ]),
            )
            .expect("renders");
        assert!(unknown.text.contains("an unknown client"));
    }

    #[test]
    fn the_registration_mail_carries_the_verification_link_when_given() {
        let link = "https://chat.example.com/verify-email#token=abc";
        let mail = Templates::default()
            .render(
                "welcome",
                &vars(&[("username", "ada"), ("verify_url", link)]),
            )
            .expect("renders");
        assert!(mail.text.contains(link), "{}", mail.text);
        assert!(mail.html.contains("Confirm your email address"));
        let without = Templates::default()
            .render("welcome", &vars(&[("username", "ada")]))
            .expect("renders");
        assert!(!without.text.contains("confirm"), "{}", without.text);
    }

    #[test]
    fn reset_and_verification_mails_carry_their_link_and_expiry() {
        let templates = Templates::default();
        let reset = templates
            .render(
                "password_reset",
                &vars(&[
                    ("username", "ada"),
                    (
                        "reset_url",
                        "https://chat.example.com/reset-password#token=t1",
                    ),
                    ("expires_at", "2026-12-06T22:00:00Z"),
                ]),
            )
            .expect("renders");
        assert_eq!(reset.subject, "Reset your microchat password");
        assert!(
            reset
                .text
                .contains("https://chat.example.com/reset-password#token=t1")
        );
        assert!(reset.html.contains("2026-12-06T22:00:00Z"));
        let verify = templates
            .render(
                "verify_email",
                &vars(&[
                    ("username", "ada"),
                    ("email", "ada@example.com"),
                    (
                        "verify_url",
                        "https://chat.example.com/verify-email#token=t2",
                    ),
                    ("expires_at", "2026-12-08T22:00:00Z"),
                ]),
            )
            .expect("renders");
        assert!(verify.text.contains("ada@example.com"));
        assert!(verify.text.contains("#token=t2"));
    }

    #[test]
    fn the_logout_mail_links_the_password_page_when_given() {
        let mail = Templates::default()
            .render(
                "logout",
                &vars(&[
                    ("username", "grace"),
                    ("at", "now"),
                    ("client_ip", ""),
                    ("user_agent", ""),
                    ("password_url", "https://chat.example.com/account/password"),
                ]),
            )
            .expect("renders");
        assert!(
            mail.text
                .contains("https://chat.example.com/account/password")
        );
        assert!(
            mail.html.contains(
                r#"href="https:&#x2f;&#x2f;chat.example.com&#x2f;account&#x2f;password""#
            ),
            "{}",
            mail.html
        );
    }

    #[test]
    fn a_missing_variable_or_template_is_an_error() {
        let templates = Templates::default();
        assert_eq!(
            templates.render("welcome", &vars(&[])),
            Err(RenderError::MissingVar {
                template: "welcome",
                var: "username"
            })
        );
        assert_eq!(
            templates.render("nope", &vars(&[])),
            Err(RenderError::UnknownTemplate("nope".into()))
        );
    }

    #[test]
    fn a_subject_stays_one_line() {
        let mail = Templates::default()
            .render(
                "welcome",
                &vars(&[("username", "a\r\nBcc: victim@example.com")]),
            )
            .expect("renders");
        assert!(!mail.subject.contains('\n') && !mail.subject.contains('\r'));
    }

    #[test]
    fn a_written_message_keeps_its_words_and_names_its_sender() {
        let mail = Templates::default()
            .render(
                "message",
                &vars(&[
                    ("subject", "Maintenance tonight"),
                    ("message", "We restart at <22:00>."),
                    ("sender", "admin@example.com"),
                ]),
            )
            .expect("renders");
        assert_eq!(mail.subject, "Maintenance tonight");
        assert!(
            mail.text.contains("We restart at <22:00>."),
            "{}",
            mail.text
        );
        assert!(mail.html.contains("&lt;22:00&gt;"), "{}", mail.html);
        assert!(mail.text.contains("admin@example.com"));
    }

    #[test]
    fn a_mention_digest_lists_each_mention_and_escapes_them_in_html() {
        let mail = Templates::default()
            .render(
                "mention_digest",
                &vars(&[
                    ("username", "ada"),
                    ("count", "2"),
                    ("mentions", "bob in #general: hi @ada <b>\ncyd: @ada lunch?"),
                    ("more", "0"),
                    ("chat_url", "https://chat.example.com/chat"),
                ]),
            )
            .expect("renders");
        assert_eq!(mail.subject, "2 new mentions on microchat");
        assert!(
            mail.text.contains("  - bob in #general: hi @ada <b>\n"),
            "{}",
            mail.text
        );
        assert!(
            mail.text.contains("  - cyd: @ada lunch?\n"),
            "{}",
            mail.text
        );
        assert!(!mail.text.contains("more."), "{}", mail.text);
        assert!(
            mail.html
                .contains("<li>bob in #general: hi @ada &lt;b&gt;</li>"),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<b>"), "{}", mail.html);
        let one = Templates::default()
            .render(
                "mention_digest",
                &vars(&[
                    ("username", "ada"),
                    ("count", "1"),
                    ("mentions", "bob: hi"),
                    ("more", "3"),
                    ("chat_url", "https://chat.example.com/chat"),
                ]),
            )
            .expect("renders");
        assert_eq!(one.subject, "1 new mention on microchat");
        assert!(one.text.contains("and 3 more."), "{}", one.text);
    }
}
