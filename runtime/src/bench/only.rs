//! `BASALT_BENCH_<SYSTEM>_ONLY=a,b`: run only some of a benchmark's scenarios, for iterating.
//! (`BASALT_BENCH_*` variables are never node settings, so the nodes a benchmark starts, which
//! inherit them, ignore them.)

/// The scenarios `var` names, comma-separated and case-insensitive, or `None` when it is unset.
/// An unknown name or an empty list is an error naming the known ones, not a run that
/// measures nothing.
pub fn only_from_env(var: &str, known: &[&str]) -> anyhow::Result<Option<Vec<String>>> {
    std::env::var(var).ok().map(|v| parse(var, &v, known)).transpose()
}

fn parse(var: &str, v: &str, known: &[&str]) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = v.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect();
    anyhow::ensure!(!names.is_empty(), "{var} is empty; name scenarios from {}", known.join(", "));
    if let Some(bad) = names.iter().find(|t| !known.contains(&t.as_str())) {
        anyhow::bail!("{var}: no scenario `{bad}`; the scenarios are {}", known.join(", "));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_names_and_never_an_empty_list() {
        let known = ["set", "incr", "zadd"];
        assert_eq!(parse("V", " SET, incr ,", &known).unwrap(), vec!["set", "incr"]);
        let e = parse("V", "set,sett", &known).unwrap_err().to_string();
        assert!(e.contains("`sett`") && e.contains("zadd") && e.starts_with("V:"), "{e}");
        assert!(parse("V", " , ", &known).unwrap_err().to_string().contains("V is empty"));
        assert!(only_from_env("BASALT_BENCH_SURELY_UNSET_ONLY", &known).unwrap().is_none());
    }
}
