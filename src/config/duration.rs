//! The one way the configuration reads a duration setting (humantime: `15s`, `1m30s`,
//! `500ms`), and the message every duration key gives when its value cannot be used.

use std::time::Duration;

use super::Problem;

/// Reads `v` (`None` when the setting is absent). `example` is a valid value for this key, for
/// the message; with `positive`, zero is refused too.
pub(crate) fn parse(
    v: Option<&str>,
    example: &str,
    positive: bool,
) -> Result<Option<Duration>, String> {
    let Some(v) = v else {
        return Ok(None);
    };
    match humantime::parse_duration(v) {
        Ok(d) if positive && d.is_zero() => Err(format!(
            "must be greater than zero, a duration such as {example}"
        )),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!("'{v}' is not a duration such as {example} ({e})")),
    }
}

/// [`parse`], recording a problem under `key` and giving `default` when the value is unusable.
pub(crate) fn setting(
    problems: &mut Vec<Problem>,
    key: &str,
    v: Option<&str>,
    example: &str,
    positive: bool,
    default: Duration,
) -> Duration {
    match parse(v, example, positive) {
        Ok(d) => d.unwrap_or(default),
        Err(message) => {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            });
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_one_way() {
        assert_eq!(parse(None, "15s", true), Ok(None));
        assert_eq!(
            parse(Some("1m30s"), "15s", true),
            Ok(Some(Duration::from_secs(90)))
        );
        assert_eq!(parse(Some("0s"), "15s", false), Ok(Some(Duration::ZERO)));
        assert_eq!(
            parse(Some("0s"), "15s", true).unwrap_err(),
            "must be greater than zero, a duration such as 15s"
        );
        let e = parse(Some("soon"), "10m", false).unwrap_err();
        assert!(
            e.starts_with("'soon' is not a duration such as 10m ("),
            "{e}"
        );
        let mut problems = Vec::new();
        let d = setting(
            &mut problems,
            "K",
            Some("x"),
            "1s",
            false,
            Duration::from_secs(7),
        );
        assert_eq!((d, problems.len()), (Duration::from_secs(7), 1));
        assert_eq!(problems[0].key, "K");
    }
}
