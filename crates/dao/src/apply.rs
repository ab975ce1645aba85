//! An executed proposal reaching the running mesh: a parameter change written into a node's
//! configuration file (TOML, edited with toml_edit so that the operator's comments and
//! layout stay), sans-IO: text in, text out. (A node ban becomes a CA revocation in
//! `x0tta6bl4 dao execute --ca`, through the identity crate.)

use toml_edit::{value, DocumentMut, Item, Table};

/// Sets the governed parameter `name` (`section.key`, e.g. `protocol.probe_interval_ms`) to
/// `new` in the node configuration `config`; returns the new text. Other keys, comments and
/// formatting are kept; a missing section is added.
pub fn set_parameter(config: &str, name: &str, new: u64) -> Result<String, String> {
    let (section, key) = name
        .split_once('.')
        .filter(|(s, k)| !s.is_empty() && !k.is_empty() && !k.contains('.'))
        .ok_or_else(|| format!("parameter `{name}` is not of the form section.key"))?;
    let mut doc: DocumentMut = config
        .parse()
        .map_err(|e| format!("not a TOML file: {e}"))?;
    let number = i64::try_from(new).map_err(|_| format!("value {new} does not fit in TOML"))?;
    let table = doc
        .entry(section)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| format!("`{section}` is not a table"))?;
    match table.get_mut(key) {
        Some(item) => {
            // keep the key's decoration (comments, spacing)
            let decor = item.as_value().map(|v| v.decor().clone());
            *item = value(number);
            if let (Some(decor), Some(v)) = (decor, item.as_value_mut()) {
                *v.decor_mut() = decor;
            }
        }
        None => {
            table.insert(key, value(number));
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_an_existing_key_and_keeps_comments() {
        let config = "# my node\n[node]\nname = \"a\"\n\n[protocol]\n# probe often\nprobe_interval_ms = 50 # was 20\nspf_delay_ms = 5\n";
        let out = set_parameter(config, "protocol.probe_interval_ms", 200).unwrap();
        assert_eq!(
            out,
            "# my node\n[node]\nname = \"a\"\n\n[protocol]\n# probe often\nprobe_interval_ms = 200 # was 20\nspf_delay_ms = 5\n"
        );
    }

    #[test]
    fn adds_a_missing_key_or_section() {
        let out = set_parameter(
            "[protocol]\nspf_delay_ms = 5\n",
            "protocol.lsa_refresh_ms",
            9000,
        )
        .unwrap();
        assert!(
            out.contains("spf_delay_ms = 5\nlsa_refresh_ms = 9000\n"),
            "{out}"
        );
        let out = set_parameter("[node]\nname = \"a\"\n", "protocol.spf_delay_ms", 7).unwrap();
        assert!(out.ends_with("[protocol]\nspf_delay_ms = 7\n"), "{out}");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(set_parameter("x = [", "protocol.a", 1)
            .unwrap_err()
            .contains("not a TOML"));
        assert!(set_parameter("protocol = 3\n", "protocol.a", 1)
            .unwrap_err()
            .contains("not a table"));
        assert!(set_parameter("", "nodot", 1)
            .unwrap_err()
            .contains("section.key"));
        assert!(set_parameter("", "protocol.a", u64::MAX)
            .unwrap_err()
            .contains("does not fit"));
    }
}
