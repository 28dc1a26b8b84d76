//! The static files, compiled in.

/// The content type and bytes of a static file under `/assets/`.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    const JS: &str = "text/javascript; charset=utf-8";
    let found: (&str, &[u8]) = match path {
        "app.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../assets/app.css"),
        ),
        "icon.svg" => ("image/svg+xml", include_bytes!("../assets/icon.svg")),
        "js/api.js" => (JS, include_bytes!("../assets/js/api.js")),
        "js/layout.js" => (JS, include_bytes!("../assets/js/layout.js")),
        "js/page.js" => (JS, include_bytes!("../assets/js/page.js")),
        "js/auth.js" => (JS, include_bytes!("../assets/js/auth.js")),
        "js/chat.js" => (JS, include_bytes!("../assets/js/chat.js")),
        "js/live.js" => (JS, include_bytes!("../assets/js/live.js")),
        "js/account.js" => (JS, include_bytes!("../assets/js/account.js")),
        "js/logs.js" => (JS, include_bytes!("../assets/js/logs.js")),
        "js/admin.js" => (JS, include_bytes!("../assets/js/admin.js")),
        "js/passwords.js" => (JS, include_bytes!("../assets/js/passwords.js")),
        "js/message-actions.js" => (JS, include_bytes!("../assets/js/message-actions.js")),
        "js/search.js" => (JS, include_bytes!("../assets/js/search.js")),
        "js/unread.js" => (JS, include_bytes!("../assets/js/unread.js")),
        "js/notifications.js" => (JS, include_bytes!("../assets/js/notifications.js")),
        "js/attachments.js" => (JS, include_bytes!("../assets/js/attachments.js")),
        _ => return None,
    };
    Some(found)
}
