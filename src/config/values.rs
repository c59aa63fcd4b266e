//! Step one of settings, for all of them: each setting's text (the flag, else the environment, else
//! the default) parsed by its kind into a typed [`Field`] of [`Values`], and the `*_FILE` secrets
//! read and parsed as the setting they stand for. Every refusal becomes a [`Problem`] naming the
//! variable and its value (never a secret's). No value here knows about another; the rules that
//! span settings are `resolve`'s. The only I/O is reading `*_FILE`, through the given reader.

use super::defs::{self, DefaultValue, Setting, Values};
use super::parse::{Bad, Parse};
use super::{Inputs, Problem};
use std::path::{Path, PathBuf};

/// One setting after step one.
#[derive(Debug, Clone)]
pub struct Field<T> {
    pub setting: &'static Setting,
    /// The given value, else the table's default; `None` when neither exists, the value was
    /// refused, or the setting was not in scope.
    pub value: Option<T>,
    /// The table's default, parsed.
    default: Option<T>,
    /// Given as a flag or a non-empty variable (or its `*_FILE`), not defaulted.
    pub given: bool,
    /// Step one reported a problem naming this setting.
    pub reported: bool,
    parse: fn(&str, &str) -> Result<T, Bad>,
}

impl<T: Clone> Field<T> {
    pub fn name(&self) -> &'static str {
        self.setting.name
    }

    /// The value, or for a refused one the default: the problem is reported already, and the
    /// default keeps the checks that span settings going.
    pub fn or_default(&self) -> Option<T> {
        self.value.clone().or_else(|| self.default.clone())
    }
}

/// Collects the settings in scope, and the problems and secret files met on the way.
pub struct Collector<'a> {
    inputs: &'a Inputs<'a>,
    in_scope: &'a dyn Fn(&Setting) -> bool,
    pub problems: Vec<Problem>,
    /// The `*_FILE` paths secrets were read from.
    pub secret_files: Vec<PathBuf>,
}

impl<'a> Collector<'a> {
    pub fn new(inputs: &'a Inputs<'a>, in_scope: &'a dyn Fn(&Setting) -> bool) -> Self {
        Collector {
            inputs,
            in_scope,
            problems: Vec::new(),
            secret_files: Vec::new(),
        }
    }

    fn problem(&mut self, var: &str, value: Option<String>, bad: &Bad) {
        self.problems.push(Problem {
            var: var.to_string(),
            value,
            what: bad.what.clone(),
            fix: bad.fix.clone(),
        });
    }

    /// Parses one setting: the flag's value, else the environment's (an empty variable counts as
    /// unset, as compose `.env` files leave them), else the default.
    pub fn field<K: Parse>(&mut self, name: &'static str) -> Field<K::Value> {
        let setting = defs::setting(name);
        let mut field = Field {
            setting,
            value: None,
            default: match setting.default {
                DefaultValue::Value(d) => K::parse(d, name).ok(),
                DefaultValue::None | DefaultValue::Derived(_) => None,
            },
            given: false,
            reported: false,
            parse: K::parse,
        };
        if !(self.in_scope)(setting) {
            return field;
        }
        let text = match (self.inputs.flags.get(name), (self.inputs.env)(name)) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(e)) if e.is_empty() => None,
            (None, Some(e)) => match e.into_string() {
                Ok(t) => Some(t),
                Err(_) => {
                    let bad = Bad {
                        what: "is not valid UTF-8".into(),
                        fix: "set it to plain text".into(),
                    };
                    self.problem(name, None, &bad);
                    field.reported = true;
                    return field;
                }
            },
            (None, None) => None,
        };
        let text = match text {
            Some(t) => {
                field.given = true;
                t
            }
            None => match setting.default {
                DefaultValue::Value(d) => d.to_string(),
                DefaultValue::None | DefaultValue::Derived(_) => return field,
            },
        };
        match K::parse(&text, name) {
            Ok(v) => field.value = Some(v),
            Err(bad) => {
                let shown = (!setting.kind.is_secret()).then_some(text);
                self.problem(name, shown, &bad);
                field.reported = true;
            }
        }
        field
    }

    /// `X_FILE` stands for `X`: read it, parse the content as `X`, and record it as `X`'s value.
    pub fn read_secret_files(&mut self, v: &mut Values) {
        self.secret_file(&mut v.access_token_file, &mut v.access_token);
        self.secret_file(&mut v.app_private_key_file, &mut v.app_private_key);
    }

    fn secret_file<T: Clone>(&mut self, file: &mut Field<PathBuf>, target: &mut Field<T>) {
        let Some(path) = file.value.take() else {
            return;
        };
        if target.given {
            let bad = Bad {
                what: format!("and {} are both set", file.name()),
                fix: "set only one of them (the file keeps the secret out of the environment)"
                    .into(),
            };
            self.problem(target.name(), None, &bad);
            target.reported = true;
            return;
        }
        let content = match (self.inputs.read_file)(Path::new(&path)) {
            Ok(c) => c,
            Err(e) => {
                let bad = Bad {
                    what: format!("cannot be read ({e})"),
                    fix: "mount the file (compose `secrets:`) or fix the path".into(),
                };
                self.problem(file.name(), Some(path.display().to_string()), &bad);
                file.reported = true;
                return;
            }
        };
        match (target.parse)(&content, target.name()) {
            Ok(value) => {
                target.value = Some(value);
                target.given = true;
                self.secret_files.push(path);
            }
            Err(bad) => {
                let bad = Bad {
                    what: format!("holds a value that {}", bad.what),
                    fix: bad.fix,
                };
                self.problem(file.name(), Some(path.display().to_string()), &bad);
                file.reported = true;
            }
        }
    }
}
