//! Ledger URLs in errors and logs, without their passwords.

/// `url` with the password of its userinfo (`user:PASSWORD@host`) and any `password=` query
/// parameter replaced by `***`, so that it may be printed.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The userinfo ends at the last `@` before the query. Searching that far, rather than
    // stopping at the first `/`, also catches a password that (invalidly) holds an unencoded `/`:
    // a mangled host in the output is better than a leaked password.
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (authority, tail) = match rest[..query_start].rfind('@') {
        Some(at) => {
            let host_end = rest[at..].find(['/', '?', '#']).map_or(rest.len(), |i| at + i);
            rest.split_at(host_end)
        }
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            rest.split_at(end)
        }
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = redact_query_password(tail);
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://afk:s3cret@db:5432/afk"),
            "postgres://afk:***@db:5432/afk"
        );
        assert_eq!(
            redact_url("postgres://afk:p@ss@db/afk"),
            "postgres://afk:***@db/afk"
        );
        assert_eq!(
            redact_url("postgres://db/afk?user=afk&password=s3cret&sslmode=require"),
            "postgres://db/afk?user=afk&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://afk:pa/ss@db/afk"),
            "postgres://afk:***@db/afk"
        );
        assert_eq!(redact_url("postgres://afk@db/afk"), "postgres://afk@db/afk");
        assert_eq!(
            redact_url("sqlite:///var/lib/afk/ledger.db"),
            "sqlite:///var/lib/afk/ledger.db"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }
}
