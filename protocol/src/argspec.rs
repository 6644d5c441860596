//! The Module XML Argument Specification: the typed schema a fix or check module declares for its
//! options, and the checking of a request's [`Options`] against it.
//!
//! A module declares each argument as a name and a format string of space-separated keywords in
//! any order, exactly one of them a type (`boolean`, `directory`, `file`, `number`, `string`,
//! `password`, `flags`, `extraction`, `relation`) and the rest modifiers (`optional`,
//! `default(x)`, `list`, `one(a,b,…)`, `any(a,b,…)`, `between(x,y)`):
//!
//! ```text
//! service => "string list"
//! order   => "optional string one(fifo,filo) default(fifo)"
//! stop    => "optional boolean default(1)"
//! ```
//!
//! The original Perl library (`ParseNamedArgs`) found a bad declaration only while parsing a
//! request; here [`ArgSpec::new`] refuses it up front with a [`SpecError`], whose text is the
//! one the Perl library gave where it had one. [`ArgSpec::check`] then reports every problem of a
//! request as an [`ArgError`], with the Perl library's exact texts; a module exits with
//! ReturnCode 4 (MISCONFIG) and [`ArgErrors`]' display (the texts joined with `", "`) as Comment.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::options::{
    is_debug_option_name, is_reserved_option_name, is_valid_option_name, Options,
};

/// The type of an argument: exactly one per declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArgType {
    /// `boolean`: true/t/yes/y/1 or false/f/no/n/0, any case; checked values are `"1"` or `"0"`.
    Boolean,
    /// `directory`: an existing directory.
    Directory,
    /// `file`: an existing file, symbolic link, named pipe or socket.
    File,
    /// `number`: digits, at most one leading `-` and at most one `.`.
    Number,
    /// `string`: any text.
    String,
    /// `password`: any text, like `string`.
    Password,
    /// `flags`: single-character flags written together without a separator, e.g. `rwx`.
    Flags,
    /// `extraction`: `column[x]` or `substr[x,y]`.
    Extraction,
    /// `relation`: `lt[x]` `gt[x]` `eq[x]` `ne[x]` `tnt[x]` `tot[x]` `bt[x,y]` `nb[x,y]`
    /// `reg[s]` `regv[s]`.
    Relation,
}

impl ArgType {
    /// Every type, in the order the specification lists them.
    pub const ALL: [ArgType; 9] = [
        ArgType::Boolean,
        ArgType::Directory,
        ArgType::File,
        ArgType::Number,
        ArgType::String,
        ArgType::Password,
        ArgType::Flags,
        ArgType::Extraction,
        ArgType::Relation,
    ];

    /// The keyword naming this type in a format string.
    pub fn keyword(self) -> &'static str {
        match self {
            ArgType::Boolean => "boolean",
            ArgType::Directory => "directory",
            ArgType::File => "file",
            ArgType::Number => "number",
            ArgType::String => "string",
            ArgType::Password => "password",
            ArgType::Flags => "flags",
            ArgType::Extraction => "extraction",
            ArgType::Relation => "relation",
        }
    }

    /// The type a format-string keyword names, if it names one.
    pub fn from_keyword(keyword: &str) -> Option<ArgType> {
        ArgType::ALL.into_iter().find(|t| t.keyword() == keyword)
    }

    /// Whether a declaration of this type may carry `list`. These types hold one structured
    /// value, and the Perl library refused lists of them.
    pub fn accepts_lists(self) -> bool {
        !matches!(
            self,
            ArgType::Boolean | ArgType::Flags | ArgType::Extraction | ArgType::Relation
        )
    }
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// One bound of `between(x,y)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// `inf`: no limit on this side.
    Inf,
    /// A number the value may equal but not pass.
    Value(f64),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Inf => f.write_str("inf"),
            Bound::Value(v) => write!(f, "{v}"),
        }
    }
}

/// The parsed format string of one argument.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgFormat {
    /// The argument's type.
    pub kind: ArgType,
    /// `optional`: a request may leave the argument out.
    pub optional: bool,
    /// `default(x)`: the value used when a request leaves the argument out (only with
    /// `optional`). It is checked like a value the request gave.
    pub default: Option<String>,
    /// `list`: a request may give the argument several values.
    pub list: bool,
    /// `one(a,b,…)`: the value must be exactly one of these.
    pub one_of: Option<Vec<String>>,
    /// `any(a,b,…)`: every value must be one of these; for `flags`, every flag character.
    pub any_of: Option<Vec<String>>,
    /// `between(x,y)`: a number from `x` to `y` inclusive (only with `number`).
    pub between: Option<(Bound, Bound)>,
}

/// Why a format string is not a valid declaration. [`SpecError::Format`] adds the argument's
/// name and gives the Perl library's text.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A keyword that is neither a type nor a modifier.
    #[error("unknown argument specifier '{0}'")]
    UnknownSpecifier(String),
    /// Two different type keywords.
    #[error("wants but cannot have both types '{0}' and '{1}'")]
    ConflictingTypes(ArgType, ArgType),
    /// No type keyword.
    #[error("no argument type")]
    NoType,
    /// `default(x)` without `optional`: a required argument never uses its default.
    #[error("default() without optional")]
    DefaultWithoutOptional,
    /// `list` on a type that cannot have lists (see [`ArgType::accepts_lists`]).
    #[error("{0} arguments cannot accept lists")]
    ListNotAccepted(ArgType),
    /// The same keyword twice.
    #[error("specifier '{0}' given twice")]
    Repeated(String),
    /// A keyword with a missing or unusable parameter, e.g. `one()` or `between(1)`.
    #[error("malformed argument specifier '{keyword}': {reason}")]
    Malformed {
        /// The keyword as written.
        keyword: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A module's declaration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The format string of argument `arg` is bad.
    #[error("{}", format_error_text(arg, error))]
    Format {
        /// The argument's name.
        arg: String,
        /// What is wrong with its format string.
        error: FormatError,
    },
    /// A name reserved for the module library (`debugfile`, `debugsyslog`) or the protocol
    /// (`module`, names starting with `_`).
    #[error("Argument name '{0}' is reserved and cannot be declared")]
    ReservedName(String),
    /// A name without the syntax `[A-Za-z0-9_.-]+`.
    #[error("Argument name '{0}' is not a valid option name")]
    InvalidName(String),
    /// A name declared twice.
    #[error("Argument '{0}' is declared more than once")]
    Duplicate(String),
}

/// The text of a [`SpecError::Format`]: the Perl library's where it had one.
fn format_error_text(arg: &str, error: &FormatError) -> String {
    match error {
        FormatError::UnknownSpecifier(keyword) => {
            format!("Unknown argument specifier '{keyword}' for argument '{arg}'")
        }
        FormatError::ConflictingTypes(a, b) => {
            format!(
                "Argument specifier for '{arg}' wants but cannot have both types '{a}' and '{b}'"
            )
        }
        FormatError::NoType => format!("Unknown argument type for argument '{arg}'"),
        FormatError::DefaultWithoutOptional => {
            format!("Argument '{arg}' has a default but is not optional")
        }
        FormatError::ListNotAccepted(kind) => {
            let noun = match kind {
                ArgType::Flags => "Flag",
                ArgType::Boolean => "Boolean",
                ArgType::Extraction => "Extraction",
                ArgType::Relation => "Relation",
                // Unreachable in practice (only these refuse lists), but a sensible text anyway.
                other => return format!("Argument '{arg}' of type '{other}' cannot accept lists"),
            };
            format!("{noun} argument '{arg}' cannot accept lists")
        }
        FormatError::Repeated(keyword) => {
            format!("Argument specifier for '{arg}' repeats '{keyword}'")
        }
        FormatError::Malformed { keyword, reason } => {
            format!("Malformed argument specifier '{keyword}' for argument '{arg}': {reason}")
        }
    }
}

/// How many numeric values an extraction or relation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// One, e.g. `column[3]`, `lt[5]`.
    One,
    /// Two, e.g. `substr[0,4]`, `bt[1,9]`.
    Two,
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arity::One => "one numeric value",
            Arity::Two => "two numeric values",
        })
    }
}

/// One problem of a request, with the Perl library's text.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum ArgError {
    /// The request gave an argument the module does not declare.
    #[error("Provided argument '{0}' is neither required nor optional")]
    Unknown(String),
    /// The request left out a required argument.
    #[error("Required argument '{0}' not provided")]
    Required(String),
    /// A `file` argument names nothing that exists (or a directory or device).
    #[error("File '{path}' does not exist for argument '{arg}'")]
    FileMissing {
        /// The argument.
        arg: String,
        /// Its value.
        path: String,
    },
    /// A `directory` argument names no directory.
    #[error("Directory '{path}' does not exist for argument '{arg}'")]
    DirectoryMissing {
        /// The argument.
        arg: String,
        /// Its value.
        path: String,
    },
    /// A non-`list` argument was given several values.
    #[error("Argument '{0}' does not permit multiple values")]
    MultipleValues(String),
    /// A number below the lower bound of `between`.
    #[error("Value '{value}' for argument '{arg}' must be at least {min}")]
    BelowMinimum {
        /// The argument.
        arg: String,
        /// Its value.
        value: String,
        /// The lower bound.
        min: Bound,
    },
    /// A number above the upper bound of `between`.
    #[error("Value '{value}' for argument '{arg}' must not be more than {max}")]
    AboveMaximum {
        /// The argument.
        arg: String,
        /// Its value.
        value: String,
        /// The upper bound.
        max: Bound,
    },
    /// A `number` argument's value is not a number.
    #[error("Value '{value}' for argument '{arg}' is not a number")]
    NotANumber {
        /// The argument.
        arg: String,
        /// Its value.
        value: String,
    },
    /// A `boolean` argument's value is not one of the boolean words.
    #[error("Value '{value}' for argument '{arg}' is not boolean")]
    NotBoolean {
        /// The argument.
        arg: String,
        /// Its value.
        value: String,
    },
    /// `column[…]` or `substr[…]` with the wrong count of numbers, or non-numbers.
    #[error("Extraction '{extraction}' for argument '{arg}' requires {arity}")]
    ExtractionArity {
        /// The argument.
        arg: String,
        /// Its value.
        extraction: String,
        /// What the extraction needs.
        arity: Arity,
    },
    /// An extraction that is neither `column[…]` nor `substr[…]`.
    #[error("Invalid extraction '{extraction}' for argument '{arg}'")]
    InvalidExtraction {
        /// The argument.
        arg: String,
        /// Its value.
        extraction: String,
    },
    /// A numeric relation with the wrong count of numbers, or non-numbers.
    #[error("Relation '{relation}' for argument '{arg}' requires {arity}")]
    RelationArity {
        /// The argument.
        arg: String,
        /// Its value.
        relation: String,
        /// What the relation needs.
        arity: Arity,
    },
    /// A relation of none of the known forms.
    #[error("Invalid relation '{relation}' for argument '{arg}'")]
    InvalidRelation {
        /// The argument.
        arg: String,
        /// Its value.
        relation: String,
    },
    /// A value (or, for `flags` with `any`, a flag) outside `one(…)` or `any(…)`.
    #[error("Value '{value}' for argument '{arg}' is not permitted")]
    NotPermitted {
        /// The argument.
        arg: String,
        /// The value or flag.
        value: String,
    },
    /// A `list` argument with `one(…)` was given several values.
    #[error("Multiple values are not permitted to be assigned to argument '{0}'")]
    OneOfMultiple(String),
    /// The declaration itself is bad; lets a module report it the same way as a bad request.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Every problem of a request, in declaration order, then the undeclared arguments given.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgErrors(pub Vec<ArgError>);

impl fmt::Display for ArgErrors {
    /// The texts joined with `", "`: the Comment the Perl library gave.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ArgErrors {}

impl From<SpecError> for ArgErrors {
    fn from(error: SpecError) -> ArgErrors {
        ArgErrors(vec![ArgError::Spec(error)])
    }
}

impl FromStr for ArgFormat {
    type Err = FormatError;

    /// Parses a format string such as `"optional string one(fifo,filo) default(fifo)"`.
    fn from_str(format: &str) -> Result<ArgFormat, FormatError> {
        let mut kind: Option<ArgType> = None;
        let mut optional = false;
        let mut list = false;
        let mut default = None;
        let mut one_of = None;
        let mut any_of = None;
        let mut between = None;

        for token in format.split_whitespace() {
            let (word, param) = split_keyword(token)?;
            if let Some(t) = ArgType::from_keyword(word) {
                if param.is_some() {
                    return Err(FormatError::UnknownSpecifier(token.to_owned()));
                }
                match kind {
                    None => kind = Some(t),
                    Some(k) if k == t => return Err(FormatError::Repeated(token.to_owned())),
                    Some(k) => return Err(FormatError::ConflictingTypes(k, t)),
                }
                continue;
            }
            let repeated = || FormatError::Repeated(word.to_owned());
            match (word, param) {
                ("optional", None) => set_once(&mut optional, repeated)?,
                ("list", None) => set_once(&mut list, repeated)?,
                ("default", Some(p)) => put_once(&mut default, p.to_owned(), repeated)?,
                ("one", Some(p)) => put_once(&mut one_of, choices(token, p)?, repeated)?,
                ("any", Some(p)) => put_once(&mut any_of, choices(token, p)?, repeated)?,
                ("between", Some(p)) => put_once(&mut between, bounds(token, p)?, repeated)?,
                ("default" | "one" | "any" | "between", None) => {
                    return Err(FormatError::Malformed {
                        keyword: token.to_owned(),
                        reason: "needs a value in parentheses",
                    })
                }
                _ => return Err(FormatError::UnknownSpecifier(token.to_owned())),
            }
        }

        let kind = kind.ok_or(FormatError::NoType)?;
        if default.is_some() && !optional {
            return Err(FormatError::DefaultWithoutOptional);
        }
        if list && !kind.accepts_lists() {
            return Err(FormatError::ListNotAccepted(kind));
        }
        if between.is_some() && kind != ArgType::Number {
            return Err(FormatError::Malformed {
                keyword: "between".to_owned(),
                reason: "applies only to number arguments",
            });
        }
        Ok(ArgFormat {
            kind,
            optional,
            default,
            list,
            one_of,
            any_of,
            between,
        })
    }
}

impl fmt::Display for ArgFormat {
    /// The format string, type first; it parses back to an equal `ArgFormat`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.optional {
            f.write_str(" optional")?;
        }
        if self.list {
            f.write_str(" list")?;
        }
        if let Some(default) = &self.default {
            write!(f, " default({default})")?;
        }
        if let Some(one) = &self.one_of {
            write!(f, " one({})", one.join(","))?;
        }
        if let Some(any) = &self.any_of {
            write!(f, " any({})", any.join(","))?;
        }
        if let Some((lo, hi)) = &self.between {
            write!(f, " between({lo},{hi})")?;
        }
        Ok(())
    }
}

/// Splits `word(param)` into its parts; a token without `(` has no parameter.
fn split_keyword(token: &str) -> Result<(&str, Option<&str>), FormatError> {
    match token.split_once('(') {
        None => Ok((token, None)),
        Some((word, rest)) => match rest.strip_suffix(')') {
            Some(param) => Ok((word, Some(param))),
            None => Err(FormatError::Malformed {
                keyword: token.to_owned(),
                reason: "missing closing parenthesis",
            }),
        },
    }
}

/// Sets a keyword flag, refusing it a second time.
fn set_once(flag: &mut bool, repeated: impl Fn() -> FormatError) -> Result<(), FormatError> {
    if std::mem::replace(flag, true) {
        return Err(repeated());
    }
    Ok(())
}

/// Stores a keyword's parameter, refusing the keyword a second time.
fn put_once<T>(
    slot: &mut Option<T>,
    value: T,
    repeated: impl Fn() -> FormatError,
) -> Result<(), FormatError> {
    if slot.replace(value).is_some() {
        return Err(repeated());
    }
    Ok(())
}

/// The choices of `one(…)` or `any(…)`: comma-separated, none empty.
fn choices(token: &str, param: &str) -> Result<Vec<String>, FormatError> {
    let list: Vec<String> = param.split(',').map(str::to_owned).collect();
    if list.iter().any(String::is_empty) {
        return Err(FormatError::Malformed {
            keyword: token.to_owned(),
            reason: "choices must not be empty",
        });
    }
    Ok(list)
}

/// The bounds of `between(x,y)`: two numbers or `inf`, the lower not above the upper.
fn bounds(token: &str, param: &str) -> Result<(Bound, Bound), FormatError> {
    let malformed = |reason| FormatError::Malformed {
        keyword: token.to_owned(),
        reason,
    };
    let bound = |text: &str| match text {
        // The specification allows `inf` for either bound; `-inf` reads naturally as a lower one.
        "inf" | "-inf" | "+inf" => Some(Bound::Inf),
        _ => parse_number(text).map(Bound::Value),
    };
    let (lo, hi) = param
        .split_once(',')
        .ok_or_else(|| malformed("needs two bounds"))?;
    let (Some(lo), Some(hi)) = (bound(lo), bound(hi)) else {
        return Err(malformed("bounds must be numbers or inf"));
    };
    if let (Bound::Value(l), Bound::Value(h)) = (lo, hi) {
        if l > h {
            return Err(malformed("lower bound is above upper bound"));
        }
    }
    Ok((lo, hi))
}

/// Whether `text` is a number: digits, at most one leading `-`, at most one `.`, at least one
/// digit (the Perl library's rule, so no `+`, exponent or spaces).
pub fn is_number(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let mut dots = 0;
    let mut digits = 0;
    for c in unsigned.chars() {
        match c {
            '0'..='9' => digits += 1,
            '.' => dots += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

/// The value of a number, if `text` is one by [`is_number`].
fn parse_number(text: &str) -> Option<f64> {
    if !is_number(text) {
        return None;
    }
    // `f64`'s parser accepts every form `is_number` does (`5.`, `.5`, `-.5`).
    text.parse().ok()
}

/// A boolean word's value: true/t/yes/y/1 or false/f/no/n/0, any case.
pub fn parse_boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Splits `name[inner]` into its parts.
fn bracketed(text: &str) -> Option<(&str, &str)> {
    let (name, rest) = text.split_once('[')?;
    Some((name, rest.strip_suffix(']')?))
}

/// Whether `inner` is exactly the count of comma-separated numbers `arity` asks for.
fn has_numbers(inner: &str, arity: Arity) -> bool {
    let parts: Vec<&str> = inner.split(',').collect();
    let wanted = match arity {
        Arity::One => 1,
        Arity::Two => 2,
    };
    parts.len() == wanted && parts.iter().all(|p| is_number(p))
}

/// A module's whole declaration: argument names and formats, in declaration order.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgSpec(Vec<(String, ArgFormat)>);

impl ArgSpec {
    /// Parses a declaration of `(name, format)` pairs, refusing the first bad one.
    pub fn new<'a>(
        decls: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ArgSpec, SpecError> {
        let mut args: Vec<(String, ArgFormat)> = Vec::new();
        for (name, format) in decls {
            if is_debug_option_name(name) || is_reserved_option_name(name) {
                return Err(SpecError::ReservedName(name.to_owned()));
            }
            if !is_valid_option_name(name) {
                return Err(SpecError::InvalidName(name.to_owned()));
            }
            if args.iter().any(|(n, _)| n == name) {
                return Err(SpecError::Duplicate(name.to_owned()));
            }
            let format = format.parse().map_err(|error| SpecError::Format {
                arg: name.to_owned(),
                error,
            })?;
            args.push((name.to_owned(), format));
        }
        Ok(ArgSpec(args))
    }

    /// The format of argument `name`, if declared.
    pub fn get(&self, name: &str) -> Option<&ArgFormat> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }

    /// Every argument, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArgFormat)> {
        self.0.iter().map(|(n, f)| (n.as_str(), f))
    }

    /// Checks a request's options: fills in defaults, then checks every value against its
    /// argument's format. Reports every problem, in declaration order, then the undeclared
    /// arguments given (`debugfile` and `debugsyslog` are always allowed, and left out of
    /// the result). File and directory arguments are checked through `paths`: the caller's
    /// filesystem (this crate does no I/O beyond parsing).
    pub fn check(&self, options: &Options, paths: &dyn Paths) -> Result<Args, ArgErrors> {
        let mut errors = Vec::new();
        let mut args = Vec::new();
        for (name, format) in &self.0 {
            let values = match (options.get(name), &format.default) {
                (Some(given), _) => given.to_vec(),
                // Filled in before checking, so a bad default is reported like a bad value.
                (None, Some(default)) => vec![default.clone()],
                (None, None) if format.optional => continue,
                (None, None) => {
                    errors.push(ArgError::Required(name.clone()));
                    continue;
                }
            };
            let before = errors.len();
            let values = check_values(name, format, values, paths, &mut errors);
            if errors.len() == before {
                args.push((name.clone(), values));
            }
        }
        for option in options {
            if self.get(&option.name).is_none() && !is_debug_option_name(&option.name) {
                errors.push(ArgError::Unknown(option.name.clone()));
            }
        }
        if errors.is_empty() {
            Ok(Args(args))
        } else {
            Err(ArgErrors(errors))
        }
    }
}

/// Checks one argument's values, pushing its problems to `errors`; returns the values with
/// booleans normalised to `"1"`/`"0"`.
fn check_values(
    arg: &str,
    format: &ArgFormat,
    values: Vec<String>,
    paths: &dyn Paths,
    errors: &mut Vec<ArgError>,
) -> Vec<String> {
    if values.len() > 1 {
        if !format.list {
            // The values are not checked further: which of them was meant is unknown.
            errors.push(ArgError::MultipleValues(arg.to_owned()));
            return values;
        }
        if format.one_of.is_some() {
            errors.push(ArgError::OneOfMultiple(arg.to_owned()));
        }
    }
    values
        .into_iter()
        .map(|value| {
            match check_type(arg, format.kind, &value, paths) {
                Ok(normal) => {
                    check_choices(arg, format, &value, errors);
                    check_between(arg, format, &value, errors);
                    normal.unwrap_or(value)
                }
                Err(error) => {
                    // Choice and range checks of a mistyped value would only repeat the problem.
                    errors.push(error);
                    value
                }
            }
        })
        .collect()
}

/// Checks a value against its type; `Ok(Some(v))` when the checked value is `v` instead.
fn check_type(
    arg: &str,
    kind: ArgType,
    value: &str,
    paths: &dyn Paths,
) -> Result<Option<String>, ArgError> {
    let owned = || (arg.to_owned(), value.to_owned());
    match kind {
        ArgType::Boolean => match parse_boolean(value) {
            Some(b) => Ok(Some(if b { "1" } else { "0" }.to_owned())),
            None => {
                let (arg, value) = owned();
                Err(ArgError::NotBoolean { arg, value })
            }
        },
        ArgType::Number if !is_number(value) => {
            let (arg, value) = owned();
            Err(ArgError::NotANumber { arg, value })
        }
        ArgType::Directory if !paths.is_dir(value) => {
            let (arg, path) = owned();
            Err(ArgError::DirectoryMissing { arg, path })
        }
        ArgType::File if !paths.is_file_like(value) => {
            let (arg, path) = owned();
            Err(ArgError::FileMissing { arg, path })
        }
        ArgType::Extraction => {
            let (arity, inner) = match bracketed(value) {
                Some(("column", inner)) => (Arity::One, inner),
                Some(("substr", inner)) => (Arity::Two, inner),
                _ => {
                    let (arg, extraction) = owned();
                    return Err(ArgError::InvalidExtraction { arg, extraction });
                }
            };
            if has_numbers(inner, arity) {
                return Ok(None);
            }
            let (arg, extraction) = owned();
            Err(ArgError::ExtractionArity {
                arg,
                extraction,
                arity,
            })
        }
        ArgType::Relation => {
            let (arity, inner) = match bracketed(value) {
                // A regular expression may contain anything, commas and brackets included.
                Some(("reg" | "regv", _)) => return Ok(None),
                Some(("lt" | "gt" | "eq" | "ne" | "tnt" | "tot", inner)) => (Arity::One, inner),
                Some(("bt" | "nb", inner)) => (Arity::Two, inner),
                _ => {
                    let (arg, relation) = owned();
                    return Err(ArgError::InvalidRelation { arg, relation });
                }
            };
            if has_numbers(inner, arity) {
                return Ok(None);
            }
            let (arg, relation) = owned();
            Err(ArgError::RelationArity {
                arg,
                relation,
                arity,
            })
        }
        _ => Ok(None),
    }
}

/// What checking `directory` and `file` arguments asks of a filesystem: the caller answers
/// (the host, from its own; a test, from what it made up).
pub trait Paths {
    /// Whether `path` is a directory (a link to one counts).
    fn is_dir(&self, path: &str) -> bool;
    /// Whether `path` is a file, symbolic link (even dangling), named pipe or socket, as the
    /// Perl library's `-f || -l || -p || -S`: directories and devices are not.
    fn is_file_like(&self, path: &str) -> bool;
}

/// Checks `one(…)` and `any(…)`; with `flags`, `any` applies to each flag character, since a
/// flags value is "zero or more of" its flags.
fn check_choices(arg: &str, format: &ArgFormat, value: &str, errors: &mut Vec<ArgError>) {
    let refuse = |value: String| ArgError::NotPermitted {
        arg: arg.to_owned(),
        value,
    };
    if let Some(one) = &format.one_of {
        if !one.iter().any(|c| c == value) {
            errors.push(refuse(value.to_owned()));
        }
    }
    if let Some(any) = &format.any_of {
        let permitted = |v: &str| any.iter().any(|c| c == v);
        if format.kind == ArgType::Flags {
            for flag in value.chars() {
                if !permitted(flag.encode_utf8(&mut [0; 4])) {
                    errors.push(refuse(flag.to_string()));
                }
            }
        } else if !permitted(value) {
            errors.push(refuse(value.to_owned()));
        }
    }
}

/// Checks `between(x,y)`, inclusive; the value has already been checked to be a number.
fn check_between(arg: &str, format: &ArgFormat, value: &str, errors: &mut Vec<ArgError>) {
    let Some((min, max)) = format.between else {
        return;
    };
    let Some(number) = parse_number(value) else {
        errors.push(ArgError::NotANumber {
            arg: arg.to_owned(),
            value: value.to_owned(),
        });
        return;
    };
    if let Bound::Value(lo) = min {
        if number < lo {
            errors.push(ArgError::BelowMinimum {
                arg: arg.to_owned(),
                value: value.to_owned(),
                min,
            });
        }
    }
    if let Bound::Value(hi) = max {
        if number > hi {
            errors.push(ArgError::AboveMaximum {
                arg: arg.to_owned(),
                value: value.to_owned(),
                max,
            });
        }
    }
}

/// A request's checked arguments: given or defaulted, in declaration order, booleans as
/// `"1"`/`"0"`. Optional arguments without a default that the request left out are absent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Args(Vec<(String, Vec<String>)>);

impl Args {
    /// The values of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name`, if present.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// The first value of `name` as a boolean, if present and a boolean word.
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.first(name).and_then(parse_boolean)
    }

    /// Every present argument and its values, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// How many arguments are present.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real filesystem, as the host answers.
    struct Disk;
    impl Paths for Disk {
        fn is_dir(&self, path: &str) -> bool {
            std::fs::metadata(path).is_ok_and(|m| m.is_dir())
        }
        fn is_file_like(&self, path: &str) -> bool {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(path).is_ok_and(|m| m.is_file())
                || std::fs::symlink_metadata(path).is_ok_and(|m| {
                    let kind = m.file_type();
                    kind.is_fifo() || kind.is_socket() || kind.is_symlink()
                })
        }
    }

    fn initd() -> ArgSpec {
        ArgSpec::new([
            ("service", "string list"),
            ("order", "optional string one(fifo,filo) default(fifo)"),
            ("stop", "optional boolean default(1)"),
        ])
        .unwrap()
    }

    fn opts(pairs: &[(&str, &str)]) -> Options {
        pairs.iter().copied().collect()
    }

    /// The texts of checking `pairs` against a one-argument spec `name => format`.
    fn errors_of(format: &str, values: &[&str]) -> Vec<String> {
        let spec = ArgSpec::new([("a", format)]).unwrap();
        let options: Options = values.iter().map(|v| ("a", *v)).collect();
        match spec.check(&options, &Disk) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn checked(format: &str, values: &[&str]) -> Vec<String> {
        let spec = ArgSpec::new([("a", format)]).unwrap();
        let options: Options = values.iter().map(|v| ("a", *v)).collect();
        spec.check(&options, &Disk)
            .unwrap()
            .get("a")
            .unwrap()
            .to_vec()
    }

    fn spec_error(format: &str) -> String {
        ArgSpec::new([("k", format)]).unwrap_err().to_string()
    }

    /// A fresh, empty directory under the system temporary directory.
    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("argspec-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn initd_declaration_parses() {
        let spec = initd();
        let order = spec.get("order").unwrap();
        assert_eq!(order.kind, ArgType::String);
        assert!(order.optional && !order.list);
        assert_eq!(order.default.as_deref(), Some("fifo"));
        assert_eq!(
            order.one_of,
            Some(vec!["fifo".to_owned(), "filo".to_owned()])
        );
        assert!(spec.get("service").unwrap().list);
        let names: Vec<&str> = spec.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["service", "order", "stop"]);
    }

    #[test]
    fn initd_defaults_fill_in() {
        let args = initd()
            .check(&opts(&[("service", "sshd"), ("service", "cron")]), &Disk)
            .unwrap();
        assert_eq!(args.get("service").unwrap(), ["sshd", "cron"]);
        assert_eq!(args.first("order"), Some("fifo"));
        assert_eq!(args.first("stop"), Some("1"));
        assert_eq!(args.flag("stop"), Some(true));
        let names: Vec<&str> = args.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["service", "order", "stop"]);
        assert_eq!(args.len(), 3);
    }

    #[test]
    fn initd_refusals() {
        let err = initd()
            .check(&opts(&[("service", "sshd"), ("order", "lifo")]), &Disk)
            .unwrap_err();
        assert_eq!(
            err.0,
            [ArgError::NotPermitted {
                arg: "order".into(),
                value: "lifo".into()
            }]
        );
        assert_eq!(
            err.to_string(),
            "Value 'lifo' for argument 'order' is not permitted"
        );
        let err = initd().check(&opts(&[("stop", "no")]), &Disk).unwrap_err();
        assert_eq!(err.to_string(), "Required argument 'service' not provided");
    }

    #[test]
    fn every_error_reported_in_declaration_order_then_unknown() {
        let err = initd()
            .check(
                &opts(&[
                    ("bogus", "x"),
                    ("stop", "maybe"),
                    ("order", "fifo"),
                    ("order", "filo"),
                ]),
                &Disk,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Required argument 'service' not provided, \
             Argument 'order' does not permit multiple values, \
             Value 'maybe' for argument 'stop' is not boolean, \
             Provided argument 'bogus' is neither required nor optional"
        );
        assert_eq!(err.0.len(), 4);
    }

    #[test]
    fn debug_options_allowed_in_requests_but_not_declarations() {
        let args = initd()
            .check(
                &opts(&[
                    ("service", "a"),
                    ("debugfile", "/tmp/x"),
                    ("debugsyslog", "1"),
                ]),
                &Disk,
            )
            .unwrap();
        assert_eq!(args.get("debugfile"), None);
        assert_eq!(
            ArgSpec::new([("debugfile", "string")]).unwrap_err(),
            SpecError::ReservedName("debugfile".into())
        );
        assert!(matches!(
            ArgSpec::new([("debugsyslog", "boolean")]),
            Err(SpecError::ReservedName(_))
        ));
        assert!(matches!(
            ArgSpec::new([("module", "string")]),
            Err(SpecError::ReservedName(_))
        ));
        assert_eq!(
            ArgSpec::new([("a b", "string")]).unwrap_err().to_string(),
            "Argument name 'a b' is not a valid option name"
        );
        assert_eq!(
            ArgSpec::new([("x", "string"), ("x", "number")]).unwrap_err(),
            SpecError::Duplicate("x".into())
        );
    }

    #[test]
    fn booleans_normalise() {
        for word in ["true", "T", "Yes", "y", "1"] {
            assert_eq!(checked("boolean", &[word]), ["1"], "{word}");
        }
        for word in ["FALSE", "f", "no", "N", "0"] {
            assert_eq!(checked("boolean", &[word]), ["0"], "{word}");
        }
        assert_eq!(
            errors_of("boolean", &["2"]),
            ["Value '2' for argument 'a' is not boolean"]
        );
        assert_eq!(
            errors_of("boolean", &["yess"]),
            ["Value 'yess' for argument 'a' is not boolean"]
        );
    }

    #[test]
    fn numbers() {
        for good in ["0", "42", "-3.5", ".5", "5.", "-.5", "007"] {
            assert_eq!(checked("number", &[good]), [good], "{good}");
        }
        for bad in ["1.2.3", "--1", "-", ".", "", "+1", "1e5", "1-", " 1", "abc"] {
            assert_eq!(
                errors_of("number", &[bad]),
                [format!("Value '{bad}' for argument 'a' is not a number")],
                "{bad}"
            );
        }
    }

    #[test]
    fn between_bounds() {
        let f = "number between(0,1000)";
        assert_eq!(checked(f, &["0"]), ["0"]);
        assert_eq!(checked(f, &["1000"]), ["1000"]);
        assert_eq!(
            errors_of(f, &["-1"]),
            ["Value '-1' for argument 'a' must be at least 0"]
        );
        assert_eq!(
            errors_of(f, &["1000.5"]),
            ["Value '1000.5' for argument 'a' must not be more than 1000"]
        );
        // A non-number is reported once, not also as out of range.
        assert_eq!(
            errors_of(f, &["x"]),
            ["Value 'x' for argument 'a' is not a number"]
        );
        assert_eq!(checked("number between(inf,10)", &["-99999"]), ["-99999"]);
        assert_eq!(
            errors_of("number between(inf,10)", &["10.01"]),
            ["Value '10.01' for argument 'a' must not be more than 10"]
        );
        assert_eq!(
            checked("number between(-2.5,inf)", &["99999999"]),
            ["99999999"]
        );
        assert_eq!(
            errors_of("number between(-2.5,inf)", &["-3"]),
            ["Value '-3' for argument 'a' must be at least -2.5"]
        );
        assert_eq!(
            "number between(inf,inf)"
                .parse::<ArgFormat>()
                .unwrap()
                .between,
            Some((Bound::Inf, Bound::Inf))
        );
    }

    #[test]
    fn strings_passwords_and_lists() {
        assert_eq!(checked("string", &["any thing"]), ["any thing"]);
        assert_eq!(checked("password", &["s3cr3t!"]), ["s3cr3t!"]);
        assert_eq!(checked("password list", &["a", "b"]), ["a", "b"]);
        assert_eq!(
            errors_of("password", &["a", "b"]),
            ["Argument 'a' does not permit multiple values"]
        );
        assert_eq!(checked("number list", &["1", "-2"]), ["1", "-2"]);
        assert_eq!(
            errors_of("number list", &["1", "x", "y"]),
            [
                "Value 'x' for argument 'a' is not a number",
                "Value 'y' for argument 'a' is not a number"
            ]
        );
    }

    #[test]
    fn one_and_any() {
        assert_eq!(
            errors_of("string list one(a,b)", &["a", "b"]),
            ["Multiple values are not permitted to be assigned to argument 'a'"]
        );
        assert_eq!(checked("string list one(a,b)", &["b"]), ["b"]);
        assert_eq!(checked("string list any(a,b,c)", &["c", "a"]), ["c", "a"]);
        assert_eq!(
            errors_of("string list any(a,b,c)", &["a", "d"]),
            ["Value 'd' for argument 'a' is not permitted"]
        );
        assert_eq!(checked("flags any(r,w,x)", &["rx"]), ["rx"]);
        assert_eq!(checked("flags any(r,w,x)", &[""]), [""]);
        assert_eq!(
            errors_of("flags any(r,w,x)", &["rqw"]),
            ["Value 'q' for argument 'a' is not permitted"]
        );
        assert_eq!(checked("flags", &["abc"]), ["abc"]);
        assert_eq!(
            errors_of("flags one(r,w)", &["rw"]),
            ["Value 'rw' for argument 'a' is not permitted"]
        );
    }

    #[test]
    fn defaults_are_validated() {
        let spec = ArgSpec::new([("n", "optional number default(ten)")]).unwrap();
        assert_eq!(
            spec.check(&Options::new(), &Disk).unwrap_err().to_string(),
            "Value 'ten' for argument 'n' is not a number"
        );
        let spec = ArgSpec::new([("b", "optional boolean default(No)")]).unwrap();
        let args = spec.check(&Options::new(), &Disk).unwrap();
        assert_eq!(args.first("b"), Some("0"));
        assert_eq!(args.flag("b"), Some(false));
        // Optional without default and left out: absent.
        let spec = ArgSpec::new([("s", "optional string")]).unwrap();
        let args = spec.check(&Options::new(), &Disk).unwrap();
        assert!(args.is_empty());
        assert_eq!(args.first("s"), None);
        assert_eq!(args.flag("s"), None);
    }

    #[test]
    fn files_and_directories_on_disk() {
        let dir = scratch_dir("fs");
        let file = dir.join("present");
        std::fs::write(&file, b"x").unwrap();
        let dir_s = dir.to_str().unwrap();
        let file_s = file.to_str().unwrap();
        let missing = dir.join("absent");
        let missing_s = missing.to_str().unwrap();

        assert_eq!(checked("directory", &[dir_s]), [dir_s]);
        assert_eq!(
            errors_of("directory", &[file_s]),
            [format!(
                "Directory '{file_s}' does not exist for argument 'a'"
            )]
        );
        assert_eq!(
            errors_of("directory", &[missing_s]),
            [format!(
                "Directory '{missing_s}' does not exist for argument 'a'"
            )]
        );
        assert_eq!(checked("file", &[file_s]), [file_s]);
        assert_eq!(
            errors_of("file", &[missing_s]),
            [format!(
                "File '{missing_s}' does not exist for argument 'a'"
            )]
        );
        assert_eq!(
            errors_of("file", &[dir_s]),
            [format!("File '{dir_s}' does not exist for argument 'a'")]
        );
        #[cfg(unix)]
        {
            // A dangling link still counts as a file, like Perl's `-l`.
            let link = dir.join("dangling");
            std::os::unix::fs::symlink(&missing, &link).unwrap();
            let link_s = link.to_str().unwrap();
            assert_eq!(checked("file", &[link_s]), [link_s]);
            let socket = dir.join("sock");
            let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            let socket_s = socket.to_str().unwrap();
            assert_eq!(checked("file", &[socket_s]), [socket_s]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn extractions() {
        assert_eq!(checked("extraction", &["column[3]"]), ["column[3]"]);
        assert_eq!(checked("extraction", &["substr[0,-4]"]), ["substr[0,-4]"]);
        assert_eq!(
            errors_of("extraction", &["column[1,2]"]),
            ["Extraction 'column[1,2]' for argument 'a' requires one numeric value"]
        );
        assert_eq!(
            errors_of("extraction", &["column[x]"]),
            ["Extraction 'column[x]' for argument 'a' requires one numeric value"]
        );
        assert_eq!(
            errors_of("extraction", &["substr[1]"]),
            ["Extraction 'substr[1]' for argument 'a' requires two numeric values"]
        );
        for bad in ["row[1]", "column3", "column[3", "Column[3]"] {
            assert_eq!(
                errors_of("extraction", &[bad]),
                [format!("Invalid extraction '{bad}' for argument 'a'")]
            );
        }
    }

    #[test]
    fn relations() {
        for good in [
            "lt[5]",
            "gt[-1]",
            "eq[0.5]",
            "ne[7]",
            "tnt[3]",
            "tot[4]",
            "bt[1,9]",
            "nb[-1,1]",
            "reg[^a,b[c]$]",
            "regv[]",
        ] {
            assert_eq!(checked("relation", &[good]), [good], "{good}");
        }
        assert_eq!(
            errors_of("relation", &["lt[1,2]"]),
            ["Relation 'lt[1,2]' for argument 'a' requires one numeric value"]
        );
        assert_eq!(
            errors_of("relation", &["bt[1]"]),
            ["Relation 'bt[1]' for argument 'a' requires two numeric values"]
        );
        assert_eq!(
            errors_of("relation", &["nb[a,b]"]),
            ["Relation 'nb[a,b]' for argument 'a' requires two numeric values"]
        );
        for bad in ["le[5]", "lt5", "regex"] {
            assert_eq!(
                errors_of("relation", &[bad]),
                [format!("Invalid relation '{bad}' for argument 'a'")]
            );
        }
    }

    #[test]
    fn lists_refused_for_single_value_types() {
        assert_eq!(
            spec_error("flags list"),
            "Flag argument 'k' cannot accept lists"
        );
        assert_eq!(
            spec_error("list boolean"),
            "Boolean argument 'k' cannot accept lists"
        );
        assert_eq!(
            spec_error("extraction list"),
            "Extraction argument 'k' cannot accept lists"
        );
        assert_eq!(
            spec_error("relation list"),
            "Relation argument 'k' cannot accept lists"
        );
    }

    #[test]
    fn declaration_errors() {
        assert_eq!(
            spec_error("string frobnicate"),
            "Unknown argument specifier 'frobnicate' for argument 'k'"
        );
        assert_eq!(
            spec_error("string(3)"),
            "Unknown argument specifier 'string(3)' for argument 'k'"
        );
        assert_eq!(
            spec_error("string optional number"),
            "Argument specifier for 'k' wants but cannot have both types 'string' and 'number'"
        );
        assert_eq!(
            spec_error("optional list"),
            "Unknown argument type for argument 'k'"
        );
        assert_eq!(spec_error(""), "Unknown argument type for argument 'k'");
        assert_eq!(
            spec_error("string default(x)"),
            "Argument 'k' has a default but is not optional"
        );
        assert_eq!(
            spec_error("string string"),
            "Argument specifier for 'k' repeats 'string'"
        );
        assert_eq!(
            spec_error("optional string optional"),
            "Argument specifier for 'k' repeats 'optional'"
        );
        assert!(spec_error("string one()").starts_with("Malformed argument specifier 'one()'"));
        assert!(spec_error("string any(a,,b)").starts_with("Malformed"));
        assert!(spec_error("string one").starts_with("Malformed"));
        assert!(spec_error("number between(1)").starts_with("Malformed"));
        assert!(spec_error("number between(a,2)").starts_with("Malformed"));
        assert!(spec_error("number between(5,1)").contains("lower bound is above upper"));
        assert!(spec_error("string between(1,2)").contains("only to number"));
        assert!(spec_error("string one(a,b").contains("missing closing parenthesis"));
        assert_eq!(
            "string bogus".parse::<ArgFormat>().unwrap_err(),
            FormatError::UnknownSpecifier("bogus".into())
        );
    }

    #[test]
    fn format_round_trips_through_display() {
        for text in [
            "optional string one(fifo,filo) default(fifo)",
            "number between(inf,-2.5)",
            "password optional list any(a,b)",
            "flags",
        ] {
            let format: ArgFormat = text.parse().unwrap();
            let again: ArgFormat = format.to_string().parse().unwrap();
            assert_eq!(format, again, "{text}");
        }
        assert_eq!(
            "optional default(1) boolean"
                .parse::<ArgFormat>()
                .unwrap()
                .to_string(),
            "boolean optional default(1)"
        );
    }

    #[test]
    fn test_check_module_declaration() {
        let spec = ArgSpec::new([
            ("exitcode", "number between(0,1000)"),
            ("exittext", "optional string"),
        ])
        .unwrap();
        let args = spec
            .check(&opts(&[("exittext", "hi"), ("exitcode", "4")]), &Disk)
            .unwrap();
        assert_eq!(args.first("exitcode"), Some("4"));
        assert_eq!(args.first("exittext"), Some("hi"));
        let err = spec
            .check(
                &opts(&[("exitcode", "1001"), ("extra", "1"), ("more", "2")]),
                &Disk,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Value '1001' for argument 'exitcode' must not be more than 1000, \
             Provided argument 'extra' is neither required nor optional, \
             Provided argument 'more' is neither required nor optional"
        );
    }

    #[test]
    fn spec_errors_convert_for_uniform_reporting() {
        let spec_err = ArgSpec::new([("k", "string string2")]).unwrap_err();
        let errors: ArgErrors = spec_err.clone().into();
        assert_eq!(errors.to_string(), spec_err.to_string());
        assert_eq!(errors.0, [ArgError::Spec(spec_err)]);
    }
}
