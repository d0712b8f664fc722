//! The adapters' jq programs: `switchyard_jq` (jaq with a prelude for vendor quirks: see
//! its docs) with the two variables every adapter program may read: `$correlation` (the
//! message's correlation id, or null) and `$adapter` (the adapter's name).

use serde_json::Value;

/// The variables every program may read, in this order.
const GLOBALS: [&str; 2] = ["$correlation", "$adapter"];

/// A compiled adapter program.
#[derive(Debug)]
pub struct Program(switchyard_jq::Program);

/// What a program's variables hold for one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Globals<'a> {
    pub correlation: Option<&'a str>,
    pub adapter: &'a str,
}

impl Globals<'_> {
    fn values(&self) -> [Value; 2] {
        [
            self.correlation
                .map_or(Value::Null, |c| Value::String(c.to_owned())),
            Value::String(self.adapter.to_owned()),
        ]
    }
}

impl Program {
    /// Compiles `code`. The error says what is wrong and where in the program.
    pub fn compile(code: &str) -> Result<Self, String> {
        switchyard_jq::Program::compile(code, &GLOBALS).map(Self)
    }

    /// The program as written.
    pub fn code(&self) -> &str {
        self.0.code()
    }

    /// Every output of the program on `input`; the first error ends the run.
    pub fn run(&self, input: &Value, globals: Globals<'_>) -> Result<Vec<Value>, String> {
        self.0.run(input, &globals.values())
    }

    /// The program's one output: none or several is an error.
    pub fn one(&self, input: &Value, globals: Globals<'_>) -> Result<Value, String> {
        self.0.one(input, &globals.values())
    }

    /// The program as a predicate: its one output's truthiness.
    pub fn test(&self, input: &Value, globals: Globals<'_>) -> Result<bool, String> {
        self.0.test(input, &globals.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adapter_programs_read_their_globals() {
        let p = Program::compile("[$correlation, $adapter, .x]").expect("compiles");
        let g = Globals {
            correlation: Some("c-1"),
            adapter: "bakery",
        };
        assert_eq!(
            p.one(&json!({"x": 1}), g).expect("runs"),
            json!(["c-1", "bakery", 1])
        );
        assert_eq!(
            p.one(&json!({}), Globals::default()).expect("runs"),
            json!([null, "", null])
        );
        let e = Program::compile("$params").map(drop).unwrap_err();
        assert!(e.contains("params"), "{e}");
    }
}
