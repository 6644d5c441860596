//! ModuleOptions: named values passed to a module, and the rules for their names.

/// One named option and its values, in the order given. A list-valued option travels as the
/// same `ModuleOption` element repeated, one `OptionValue` each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModuleOption {
    /// The option's name (`OptionName`).
    pub name: String,
    /// Its values, at least one in a valid document.
    pub values: Vec<String>,
}

/// The options of a request: name → values, names in order of first appearance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Options(Vec<ModuleOption>);

impl Options {
    /// No options.
    pub fn new() -> Options {
        Options(Vec::new())
    }

    /// Adds a value to `name`, after any values it has already.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|o| o.name == name) {
            Some(option) => option.values.push(value),
            None => self.0.push(ModuleOption {
                name,
                values: vec![value],
            }),
        }
    }

    /// The values of `name`, if it was given.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.0
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.values.as_slice())
    }

    /// The first value of `name`, if it was given.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every option, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ModuleOption> {
        self.0.iter()
    }

    /// How many distinct names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Options {
    type Item = &'a ModuleOption;
    type IntoIter = std::slice::Iter<'a, ModuleOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Options {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut options = Options::new();
        for (name, value) in iter {
            options.push(name, value);
        }
        options
    }
}

/// Whether `name` has the syntax of an option name: letters, digits, `_`, `-`, `.`, not empty.
pub fn is_valid_option_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `name` is reserved: `module` and names starting with `_` may not be sent to a module.
pub fn is_reserved_option_name(name: &str) -> bool {
    name == "module" || name.starts_with('_')
}

/// Whether `name` is reserved for the module library's debugging (`debugfile`, `debugsyslog`):
/// a request may carry it, but a module may not declare it as an argument.
pub fn is_debug_option_name(name: &str) -> bool {
    matches!(name, "debugfile" | "debugsyslog")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_collect_values() {
        let opts: Options = [("service", "a"), ("order", "filo"), ("service", "b")]
            .into_iter()
            .collect();
        assert_eq!(opts.len(), 2);
        assert_eq!(opts.get("service").unwrap(), ["a", "b"]);
        assert_eq!(opts.first("order"), Some("filo"));
        assert_eq!(opts.get("stop"), None);
    }

    #[test]
    fn name_syntax() {
        assert!(is_valid_option_name("a.b-c_9"));
        assert!(!is_valid_option_name(""));
        assert!(!is_valid_option_name("a b"));
        assert!(!is_valid_option_name("a=b"));
        assert!(is_reserved_option_name("module"));
        assert!(is_reserved_option_name("_x"));
        assert!(!is_reserved_option_name("modules"));
        assert!(is_debug_option_name("debugfile"));
    }
}
