//! jq programs (via jaq) over `serde_json` values, shared by the integration gateway's
//! mappings (`switchyard-connect`) and the API gateway's composed routes
//! (`switchyard-gateway`), with a prelude of functions for the usual vendor quirks:
//!
//! | function | does | example |
//! |---|---|---|
//! | `quoted` | a number (or anything) as a JSON string; strings stay | `123 \| quoted` = `"123"` |
//! | `pad($n)` | left-pads with zeros to `$n` characters | `123 \| pad(5)` = `"00123"` |
//! | `lpad($n; $c)`, `rpad($n; $c)` | pads left or right with `$c` | `"ab" \| rpad(4; " ")` = `"ab  "` |
//! | `unpad` | drops leading zeros and reads the number | `"00123" \| unpad` = `123` |
//! | `upcase_keys`, `downcase_keys` | renames every key of an object, deeply | `{item:1} \| upcase_keys` = `{"ITEM":1}` |
//! | `date($fmt)` | an RFC 3339 time re-written with a strftime format | `"2024-05-01T10:00:00Z" \| date("%Y%m%d")` = `"20240501"` |
//!
//! Programs run with the standard library of jq (`map`, `select`, `tostring`,
//! `ascii_upcase`, `strftime`, ...). Each user of the crate names the global variables its
//! programs may read (`$correlation`, `$params`, ...) when it compiles them, and gives their
//! values, in the same order, when it runs them. Pure: no I/O, no workspace dependency.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

const PRELUDE: &str = r#"
def quoted: if type == "string" then . else tojson end;
def lpad($n; $c): tostring as $s | ([range(0; $n - ($s | length))] | map($c) | join("")) + $s;
def rpad($n; $c): tostring as $s | $s + ([range(0; $n - ($s | length))] | map($c) | join(""));
def pad($n): lpad($n; "0");
def unpad: if type == "string" then tonumber else . end;
def upcase_keys: walk(if type == "object" then with_entries(.key |= ascii_upcase) else . end);
def downcase_keys: walk(if type == "object" then with_entries(.key |= ascii_downcase) else . end);
def date($fmt): fromdate | strftime($fmt);
"#;

type Def = jaq_core::load::parse::Def<&'static str>;

/// The definitions a program may call: jq's standard library and the prelude, in order
/// (a definition can only call those before it, and itself), each with the words its body
/// mentions.
struct Library(Vec<(Def, Vec<String>)>);

fn library() -> &'static Library {
    static LIBRARY: std::sync::OnceLock<Library> = std::sync::OnceLock::new();
    LIBRARY.get_or_init(|| {
        let prelude = jaq_core::load::parse(PRELUDE, |p| p.defs()).expect("the prelude parses");
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .chain(prelude);
        // The parse tree's Debug form quotes every name a body calls (calls, `@format`s);
        // reading it back over-approximates the calls, which is all pruning needs.
        Library(
            defs.map(|d| {
                let mentioned = words(&format!("{:?}", d.body)).map(str::to_owned).collect();
                (d, mentioned)
            })
            .collect(),
        )
    })
}

impl Library {
    fn all(&self) -> Vec<Def> {
        self.0.iter().map(|(d, _)| d.clone()).collect()
    }
}

/// The library's definitions that `code` can reach. A compiled program keeps every
/// definition it was given (the library's ~140, about 100 KB per program),
/// so a program is given only those its words name, and theirs, and so on: one pass from
/// the last definition back, as none calls a later one.
fn reachable(code: &str) -> Vec<Def> {
    let library = &library().0;
    let mut named: std::collections::HashSet<&str> = words(code).collect();
    let mut keep = vec![false; library.len()];
    for (i, (def, mentioned)) in library.iter().enumerate().rev() {
        if named.contains(def.name) {
            keep[i] = true;
            named.extend(mentioned.iter().map(String::as_str));
        }
    }
    library
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|((d, _), _)| d.clone())
        .collect()
}

/// The identifier-like words of a text (`map`, `@base64`, `$x`): a superset of the names
/// it calls.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '$')))
        .filter(|w| !w.is_empty())
}

/// The most outputs a program may produce before it is cut off (a program that emits
/// millions of values is a mistake, not a request).
pub const MAX_OUTPUTS: usize = 1024;

/// A compiled jq program.
pub struct Program {
    code: String,
    globals: usize,
    filter: jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Program").field(&self.code).finish()
    }
}

impl Program {
    /// Compiles `code`, which may read the variables `globals` (each with its `$`). The
    /// error says what is wrong and where in the program.
    pub fn compile(code: &str, globals: &[&'static str]) -> Result<Self, String> {
        // Pruning drops only what the program cannot reach; should it ever drop too much,
        // the whole library decides, and gives the error a program that is wrong deserves.
        Self::compile_with(code, globals, reachable(code))
            .or_else(|_| Self::compile_with(code, globals, library().all()))
    }

    fn compile_with(
        code: &str,
        globals: &[&'static str],
        library: Vec<Def>,
    ) -> Result<Self, String> {
        let program = File { code, path: () };
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(library);
        let arena = Arena::default();
        let modules = loader.load(&arena, program).map_err(|errs| {
            let shown: Vec<String> = errs
                .into_iter()
                .map(|(file, e)| load_error(file.code, e))
                .collect();
            shown.join("; ")
        })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(globals.iter().copied())
            .compile(modules)
            .map_err(|errs| {
                let shown: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, es)| es)
                    .map(|(name, undefined)| format!("undefined {} `{name}`", undefined.as_str()))
                    .collect();
                shown.join("; ")
            })?;
        Ok(Self {
            code: code.to_owned(),
            globals: globals.len(),
            filter,
        })
    }

    /// The program as written.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Every output of the program on `input`, with `vars` the values of the globals named
    /// at compile time (in that order; missing ones are null); the first error ends the run.
    pub fn run(&self, input: &Value, vars: &[Value]) -> Result<Vec<Value>, String> {
        let input = to_val(input).map_err(|e| format!("the input is not JSON jq can read: {e}"))?;
        let vars = (0..self.globals)
            .map(|i| vars.get(i).map_or(Ok(Val::Null), to_val))
            .collect::<Result<Vec<Val>, String>>()
            .map_err(|e| format!("a variable is not JSON jq can read: {e}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new(vars));
        let mut out = Vec::new();
        for v in self.filter.id.run((ctx, input)).map(unwrap_valr) {
            let v = v.map_err(|e| format!("jq error: {e}"))?;
            out.push(to_json(&v)?);
            if out.len() > MAX_OUTPUTS {
                return Err(format!(
                    "the program produced more than {MAX_OUTPUTS} values"
                ));
            }
        }
        Ok(out)
    }

    /// The program's one output: none or several is an error.
    pub fn one(&self, input: &Value, vars: &[Value]) -> Result<Value, String> {
        let mut out = self.run(input, vars)?;
        match out.len() {
            1 => Ok(out.remove(0)),
            0 => Err("the program produced no value".to_owned()),
            n => Err(format!("the program produced {n} values, not one")),
        }
    }

    /// The program as a predicate: its one output's truthiness (jq's: all but `false`
    /// and `null` are true).
    pub fn test(&self, input: &Value, vars: &[Value]) -> Result<bool, String> {
        let v = self.one(input, vars)?;
        Ok(!matches!(v, Value::Null | Value::Bool(false)))
    }
}

fn to_val(v: &Value) -> Result<Val, String> {
    match v {
        Value::Null => Ok(Val::Null),
        Value::String(s) => Ok(Val::from(s.clone())),
        other => serde_json::from_value(other.clone()).map_err(|e| e.to_string()),
    }
}

fn to_json(v: &Val) -> Result<Value, String> {
    serde_json::from_str(&v.to_string())
        .map_err(|e| format!("the program produced a value that is not JSON ({v}): {e}"))
}

fn load_error(code: &str, e: jaq_core::load::Error<&str>) -> String {
    use jaq_core::load::Error as E;
    let at = |pos: &str| {
        // `pos` is a slice of `code`: its byte offset gives the line.
        let offset = (pos.as_ptr() as usize).saturating_sub(code.as_ptr() as usize);
        let offset = offset.min(code.len());
        let line = code[..offset].lines().count().max(1);
        let col = code[..offset]
            .rsplit('\n')
            .next()
            .map_or(0, |l| l.chars().count())
            + 1;
        format!("line {line}, column {col}")
    };
    match e {
        E::Io(errs) => errs
            .into_iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect::<Vec<_>>()
            .join("; "),
        E::Lex(errs) => errs
            .into_iter()
            .map(|(expect, pos)| {
                format!("syntax error at {}: expected {}", at(pos), expect.as_str())
            })
            .collect::<Vec<_>>()
            .join("; "),
        E::Parse(errs) => errs
            .into_iter()
            .map(|(expect, pos)| {
                let found: String = pos.chars().take(12).collect();
                format!(
                    "syntax error at {}: expected {}, found {found:?}",
                    at(pos),
                    expect.as_str()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Value {
        Program::compile(code, &["$who"])
            .unwrap_or_else(|e| panic!("{code}: {e}"))
            .one(&input, &[json!("bakery")])
            .unwrap_or_else(|e| panic!("{code}: {e}"))
    }

    #[test]
    fn prelude_handles_vendor_quirks() {
        assert_eq!(run("quoted", json!(123)), json!("123"));
        assert_eq!(run("quoted", json!("x")), json!("x"));
        assert_eq!(run("pad(5)", json!(123)), json!("00123"));
        assert_eq!(run("pad(2)", json!(12345)), json!("12345"));
        assert_eq!(run("rpad(4; \" \")", json!("ab")), json!("ab  "));
        assert_eq!(run("unpad", json!("00123")), json!(123));
        assert_eq!(
            run("upcase_keys", json!({"item": {"id": 1}})),
            json!({"ITEM": {"ID": 1}})
        );
        assert_eq!(
            run("date(\"%Y%m%d\")", json!("2024-05-01T10:00:00Z")),
            json!("20240501")
        );
        assert_eq!(run("[$who, .a]", json!({"a": [1]})), json!(["bakery", [1]]));
    }

    #[test]
    fn globals_are_named_at_compile_time() {
        let e = Program::compile("$nope", &["$who"]).map(drop).unwrap_err();
        assert!(e.contains("undefined") && e.contains("nope"), "{e}");
        let p = Program::compile("[$a, $b]", &["$a", "$b"]).expect("compiles");
        assert_eq!(
            p.one(&Value::Null, &[json!({"x": 1})]).expect("runs"),
            json!([{"x": 1}, null]),
            "a missing value is null"
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = Program::compile(".data | ", &[]).map(drop).unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        let e = Program::compile("nosuchfn(1)", &[]).map(drop).unwrap_err();
        assert!(e.contains("undefined") && e.contains("nosuchfn"), "{e}");
        let p = Program::compile("error(\"boom\")", &[]).expect("compiles");
        let e = p.one(&json!({}), &[]).unwrap_err();
        assert!(e.contains("boom"), "{e}");
        let p = Program::compile(".[]", &[]).expect("compiles");
        let e = p.one(&json!([1, 2]), &[]).unwrap_err();
        assert!(e.contains("2 values"), "{e}");
        let p = Program::compile("range(0; 100000)", &[]).expect("compiles");
        assert!(p.run(&json!(null), &[]).is_err());
    }

    #[test]
    fn a_program_is_given_only_the_definitions_it_can_reach() {
        assert!(reachable(".a | length").is_empty());
        let names = |code: &str| -> Vec<&str> { reachable(code).iter().map(|d| d.name).collect() };
        let kept = names("with_entries(.value += 1)");
        for n in ["with_entries", "to_entries", "from_entries", "map"] {
            assert!(kept.contains(&n), "{n} missing from {kept:?}");
        }
        assert!(!kept.contains(&"walk"), "{kept:?}");
        // Through the prelude: upcase_keys needs walk and with_entries.
        let kept = names("upcase_keys");
        assert!(
            kept.contains(&"walk") && kept.contains(&"to_entries"),
            "{kept:?}"
        );
        assert!(names("@html \"<\\(.)>\"").contains(&"@html"));
    }

    #[test]
    fn every_library_definition_compiles_with_only_what_it_reaches() {
        // Calling each definition (every argument `.`) must compile from the pruned library
        // alone, so `compile` never needs its fallback to the whole library.
        for (def, _) in &library().0 {
            let args = vec!["."; def.args.len()].join("; ");
            let code = if args.is_empty() {
                def.name.to_owned()
            } else {
                format!("{}({args})", def.name)
            };
            if let Err(e) = Program::compile_with(&code, &[], reachable(&code)) {
                panic!("{code}: {e}");
            }
        }
    }

    #[test]
    fn predicates_follow_jq_truthiness() {
        let p = Program::compile(".data.sku >= 200 and .data.sku < 300", &[]).expect("compiles");
        assert!(p.test(&json!({"data": {"sku": 250}}), &[]).expect("runs"));
        assert!(!p.test(&json!({"data": {"sku": 300}}), &[]).expect("runs"));
        let p = Program::compile(".missing", &[]).expect("compiles");
        assert!(!p.test(&json!({}), &[]).expect("runs"));
    }
}
