//! Who may call what: for every gRPC method of every microchat service, the services
//! allowed to call it. One table, so a review sees every grant at once; a method missing
//! from it is refused to everyone (the test below fails first).
//!
//! The rules behind the table:
//! - Only the broker acts for a user: it alone calls the methods that take a user's
//!   request (they trust the user id in the request, which the broker took from a
//!   verified token).
//! - Only the listener sends the system's templated mail (welcome, sign-out, reset,
//!   verification), so a broken-into broker cannot send a genuine-looking reset link; the
//!   broker may send only an administrator's message, which names its sender.
//! - Only the listener records chat sessions from sign-in and sign-out events.
//! - Every service ships its own log lines to the logger; only the broker reads them.

use super::Service::{self, Auth, Broker, Chat, Listener, Logger, Mail};

/// The services that may call each method of one gRPC service.
#[derive(Debug)]
pub struct Policy {
    /// The protobuf service's full name, e.g. `microchat.chat.v1.Chat`.
    pub service: &'static str,
    /// `(method, callers)` pairs.
    pub methods: &'static [(&'static str, &'static [Service])],
}

impl Policy {
    /// Whether `caller` may call `method` (the method's name, not its path).
    pub fn allows(&self, caller: Service, method: &str) -> bool {
        self.methods
            .iter()
            .find(|(name, _)| *name == method)
            .is_some_and(|(_, callers)| callers.contains(&caller))
    }
}

const BROKER: &[Service] = &[Broker];
const LISTENER: &[Service] = &[Listener];
const BROKER_AND_LISTENER: &[Service] = &[Broker, Listener];
const EVERY_SERVICE: &[Service] = &[Auth, Chat, Broker, Logger, Mail, Listener];

/// Auth: only the broker, which acts for users; the listener asks whether an address it
/// would mail a mention digest is verified.
pub const AUTH: Policy = Policy {
    service: "microchat.auth.v1.Auth",
    methods: &[
        ("Register", BROKER),
        ("Login", BROKER),
        ("Refresh", BROKER),
        ("Logout", BROKER),
        ("VerifyToken", BROKER),
        ("GetUser", BROKER),
        ("ListUsers", BROKER),
        ("BeginAccountDeletion", BROKER),
        ("CompleteAccountDeletion", BROKER),
        ("ListPendingDeletions", BROKER),
        ("GetPublicKeys", BROKER),
        ("WatchRevocations", BROKER),
        ("SetUserRole", BROKER),
        ("SetUserActive", BROKER),
        ("ConfirmPassword", BROKER),
        ("ChangePassword", BROKER),
        ("RequestPasswordReset", BROKER),
        ("ResetPassword", BROKER),
        ("ListSessions", BROKER),
        ("EndSession", BROKER),
        ("EndOtherSessions", BROKER),
        ("VerifyEmail", BROKER),
        ("ResendVerification", BROKER),
        // The listener's mention digest mails verified addresses only.
        ("GetEmailStatus", BROKER_AND_LISTENER),
    ],
};

/// Chat: the broker for everything users do and for its sockets; the listener for the
/// chat sessions it records from sign-in and sign-out events, and for the unread mentions
/// and presence of the users its mention digests are for (it reads; it never acts).
pub const CHAT: Policy = Policy {
    service: "microchat.chat.v1.Chat",
    methods: &[
        ("CreateRoom", BROKER),
        ("ListRooms", BROKER),
        ("JoinRoom", BROKER),
        ("LeaveRoom", BROKER),
        ("OpenDirect", BROKER),
        ("ListConversations", BROKER),
        ("SendMessage", BROKER),
        ("SendMessages", BROKER),
        ("ListMessages", BROKER),
        ("MarkRead", BROKER),
        ("SetTyping", BROKER),
        ("OpenConnection", BROKER),
        ("CloseConnection", BROKER),
        ("LeaveBroker", BROKER),
        // The listener mails a mention digest only to users who are offline.
        ("ListPresence", BROKER_AND_LISTENER),
        ("ListMemberships", BROKER),
        ("DeleteUserData", BROKER),
        ("StartChatSession", LISTENER),
        ("EndChatSession", LISTENER),
        ("ForgetChatSessions", LISTENER),
        ("ListChatSessions", BROKER),
        ("Subscribe", BROKER),
        ("EditMessage", BROKER),
        ("DeleteMessage", BROKER),
        ("SetReaction", BROKER),
        // Notifications. The listener reads a user's unread mentions for their digest.
        ("ListNotifications", BROKER_AND_LISTENER),
        ("MarkNotificationsRead", BROKER),
        ("SearchMessages", BROKER),
        // Attachments: the broker streams users' files; the listener deletes the objects
        // of removed attachments (their `attachment.removed` events).
        ("UploadAttachment", BROKER),
        ("GetAttachment", BROKER),
        ("ReadAttachment", BROKER),
        ("PurgeAttachments", LISTENER),
    ],
};

/// The logger: every service writes its own lines; the broker reads them for admins.
pub const LOGGER: Policy = Policy {
    service: "microchat.logger.v1.Logger",
    methods: &[("WriteLogs", EVERY_SERVICE), ("QueryLogs", BROKER)],
};

/// Mail: templated mail from the listener only; an administrator's message from the broker.
pub const MAIL: Policy = Policy {
    service: "microchat.mail.v1.Mail",
    methods: &[
        ("SendMail", LISTENER),
        ("SendAdminMessage", BROKER),
        ("ListTemplates", &[Broker, Listener]),
    ],
};

/// The policy of the gRPC service `service` serves.
pub fn of(service: Service) -> Option<&'static Policy> {
    match service {
        Auth => Some(&AUTH),
        Chat => Some(&CHAT),
        Logger => Some(&LOGGER),
        Mail => Some(&MAIL),
        Broker | Listener => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of every microchat service, from the compiled descriptors.
    fn methods_in_the_protos() -> Vec<(String, String)> {
        let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("the build embeds a valid descriptor set");
        let mut methods = Vec::new();
        for file in set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    methods.push((full.clone(), method.name().to_owned()));
                }
            }
        }
        methods
    }

    #[test]
    fn every_method_of_every_service_has_a_rule_and_every_rule_a_method() {
        let policies = [&AUTH, &CHAT, &LOGGER, &MAIL];
        let methods = methods_in_the_protos();
        for (service, method) in &methods {
            let policy = policies
                .iter()
                .find(|policy| policy.service == service)
                .unwrap_or_else(|| panic!("no policy for the gRPC service {service}"));
            assert!(
                policy.methods.iter().any(|(name, _)| name == method),
                "{service}/{method} has no rule in platform::service_auth::policy"
            );
        }
        for policy in policies {
            for (name, _) in policy.methods {
                assert!(
                    methods
                        .iter()
                        .any(|(service, method)| service == policy.service && method == name),
                    "{}/{name} is in the policy but not in the protos",
                    policy.service
                );
            }
        }
    }

    #[test]
    fn only_the_broker_acts_for_users_and_only_the_listener_sends_templated_mail() {
        assert!(CHAT.allows(Broker, "SendMessage"));
        assert!(!CHAT.allows(Listener, "SendMessage"));
        assert!(!CHAT.allows(Mail, "ListMessages"));
        assert!(!AUTH.allows(Listener, "ListUsers"));
        assert!(MAIL.allows(Listener, "SendMail"));
        assert!(!MAIL.allows(Broker, "SendMail"));
        assert!(!LOGGER.allows(Chat, "QueryLogs"));
        assert!(LOGGER.allows(Chat, "WriteLogs"));
        assert!(!CHAT.allows(Broker, "NoSuchMethod"));
    }
}
