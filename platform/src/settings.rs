//! Helpers for the typed settings of every service (`<SERVICE>_<SETTING>` environment
//! variables, parsed by clap so `--help` lists each one with its default).

use std::{path::PathBuf, time::Duration};

/// Default directory for embedded state (SQLite files, keys, mail files): `MICROCHAT_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Parses a human duration such as `15m`, `500ms` or `30d`, for clap's `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// The SQLite URL of a service's embedded database inside the data directory.
pub fn sqlite_url(data_dir: &std::path::Path, file: &str) -> String {
    let path: PathBuf = data_dir.join(file);
    format!("sqlite://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sqlite_url_points_into_the_data_dir() {
        let url = sqlite_url(std::path::Path::new("./data"), "auth.db");
        assert_eq!(url, "sqlite://./data/auth.db");
    }
}
