//! A mutation fuzzer over the example fleet repo (this crate's `inventory/`, `roles/`,
//! `playbooks/` and `templates/`). Each input is that repo with 1–4 random mutations —
//! structural YAML edits, extreme scalars, key typos, type swaps, anchors, deep nesting,
//! template expressions with extreme arguments, broken template syntax, junk bytes — run
//! in-process through what `fleet validate` and `fleet plan playbooks/site.yaml` do.
//!
//! A finding is a panic (caught here or caught inside fleet), an error diagnostic without a
//! location (or with one that points nowhere), an input that takes longer than the budget,
//! and — seen by the next run, through the state file — an abort or a hang. Input `i` of
//! seed `s` depends only on `s`, `i` and the base repo, so a run is reproducible and can be
//! resumed after the process died. `scripts/fuzz` drives it; docs/fuzzing.md describes it.
//!
//! ```text
//! fuzz [--seed S] [--seconds N | --until EPOCH] [--count N] [--start I] [--out DIR]
//!      [--base DIR] [--resume] [--budget-ms MS] [--hang-ms MS] [--mem-mb MB] [--no-links] [-v]
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The same allocator as the `fleet` binary, so allocation failures behave the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// ---------------------------------------------------------------------------------------
// A small seeded PRNG (splitmix64): no dependency, the same stream on every platform.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// An index chosen by weight.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut r = self.next() % total.max(1);
        for (i, &w) in weights.iter().enumerate() {
            if r < u64::from(w) {
                return i;
            }
            r -= u64::from(w);
        }
        weights.len() - 1
    }

    /// A size spread over orders of magnitude: 1 ..= 2^max_bits.
    fn size(&mut self, max_bits: u32) -> usize {
        let bits = self.below(max_bits as usize + 1) as u32;
        1 + self.below(1usize << bits)
    }
}

/// The seed of input `index`: inputs do not depend on each other, so a run can resume at any
/// index after a crash and still produce the same inputs.
fn input_seed(seed: u64, index: u64) -> u64 {
    let mut r = Rng::new(seed ^ 0x5EED_F1EE_7000_0000);
    let a = r.next();
    Rng::new(a ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next()
}

// ---------------------------------------------------------------------------------------
// The repo as data: path (relative, `/`-separated) → file content or symlink target.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    Link(String),
}

type Files = BTreeMap<String, Entry>;

const PARTS: &[&str] = &["inventory", "roles", "playbooks", "templates"];

fn read_base(base: &Path) -> Files {
    fn walk(root: &Path, dir: &Path, out: &mut Files) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("fuzz: cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("fuzz: directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("fuzz: below the base")
                    .to_string_lossy()
                    .replace('\\', "/");
                let bytes = std::fs::read(&p)
                    .unwrap_or_else(|e| panic!("fuzz: cannot read {}: {e}", p.display()));
                out.insert(rel, Entry::File(bytes));
            }
        }
    }
    let mut files = Files::new();
    for part in PARTS {
        walk(base, &base.join(part), &mut files);
    }
    files
}

/// Makes `dir` hold exactly `next`, touching only what differs from `prev` (what is there).
fn sync(dir: &Path, prev: &Files, next: &Files, base_dirs: &BTreeSet<String>) {
    let keys: BTreeSet<&String> = prev.keys().chain(next.keys()).collect();
    let mut removed_dirs = BTreeSet::new();
    for k in keys {
        let (a, b) = (prev.get(k), next.get(k));
        if a == b {
            continue;
        }
        let path = dir.join(k);
        if a.is_some() {
            std::fs::remove_file(&path)
                .unwrap_or_else(|e| panic!("fuzz: cannot remove {}: {e}", path.display()));
            let mut parent = Path::new(k.as_str()).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                removed_dirs.insert(p.to_string_lossy().to_string());
                parent = p.parent();
            }
        }
        match b {
            Some(Entry::File(bytes)) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("fuzz: create a directory");
                }
                std::fs::write(&path, bytes)
                    .unwrap_or_else(|e| panic!("fuzz: cannot write {}: {e}", path.display()));
            }
            Some(Entry::Link(target)) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("fuzz: create a directory");
                }
                std::os::unix::fs::symlink(target, &path).expect("fuzz: create a symlink");
            }
            None => {}
        }
    }
    // Directories a mutation created and that are now empty (deepest first).
    for d in removed_dirs.iter().rev() {
        if !base_dirs.contains(d) {
            let _ = std::fs::remove_dir(dir.join(d));
        }
    }
}

fn dirs_of(files: &Files) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for k in files.keys() {
        let mut parent = Path::new(k.as_str()).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().to_string());
            parent = p.parent();
        }
    }
    dirs
}

fn fnv(files: &Files) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    for (k, v) in files {
        eat(k.as_bytes());
        match v {
            Entry::File(b) => eat(b),
            Entry::Link(t) => eat(t.as_bytes()),
        }
        eat(&[0xff]);
    }
    h
}

// ---------------------------------------------------------------------------------------
// What mutations draw from.

/// Scalars at the edges of what YAML and fleet's decoders take.
const SCALARS: &[&str] = &[
    "9223372036854775808",
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "4611686018427387904",
    "4294967296",
    "65536",
    "-1",
    "0",
    "-0",
    "+5",
    "00000000000000000000000000000000000001",
    "1e309",
    "-1e309",
    "1e-400",
    "1.10",
    ".inf",
    "-.inf",
    ".nan",
    "0x7fffffffffffffff",
    "0xffffffffffffffffffff",
    "0o777777777777777777777777",
    "0b101",
    "1_000",
    "",
    "~",
    "null",
    "true",
    "False",
    "no",
    "yes",
    "''",
    "\"\"",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "\"\\x00\\xff\"",
    "\"\\U0010FFFF\"",
    "\"a\\nb\\nc\"",
    "'",
    "\"",
    "'unterminated",
    "\"unterminated",
    "\"\\",
    "&a",
    "*a",
    "*nosuch",
    "&a x",
    "!!binary aGVsbG8=",
    "!!int abc",
    "!!str 5",
    "!!float x",
    "!!map x",
    "!custom x",
    "!<tag:x> y",
    "<<",
    "? x",
    "|",
    ">",
    "|-",
    "|99",
    "%YAML 1.1",
    "[]",
    "{}",
    "[[]]",
    "[{}]",
    "{a: }",
    "{: a}",
    "[a, [b, {c: d}]]",
    "{",
    "[",
    "}",
    "]",
    ",",
    "-",
    "- -",
    ":",
    "::",
    "@x",
    "`x`",
    "\tx",
    "x\ty",
    "é",
    "日本語",
    "\u{202e}abc",
    "\u{feff}x",
    "\u{0085}",
    "\u{2028}",
    "/dev/zero",
    "/dev/urandom",
    "/proc/self/mem",
    "../../../../../etc/passwd",
    "roles/../../x",
    "/",
    ".",
    "..",
    "inventory",
    "inventory/fleet.yaml",
    "~root",
    "$HOME",
    "%h",
    "localhost",
    "127.0.0.1:0",
    "[::1]",
    "host:99999",
    "-oProxyCommand=touch /tmp/x",
    "$(touch /tmp/x)",
    "0755",
    "\"0755\"",
    "\"07777\"",
    "\"9999\"",
    "\"-1\"",
    "\"u+rwx\"",
    "1h",
    "99999999999h",
    "18446744073709551615s",
    "0s",
    "-5s",
    "1y",
    "llama3.1:8b",
    "cloud_api",
    "all",
    "*",
    "!bob",
    "hq:&llm_worker",
    "bob,maestro",
    "nosuchnode",
];

/// Integers for template arguments.
const INTS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "7",
    "100",
    "100000",
    "2**31",
    "2**32",
    "2**53 + 1",
    "2**62",
    "2**63",
    "2**63 - 1",
    "-2**63",
    "2**64",
    "2**127",
    "2**128",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "170141183460469231731687303715884105727",
    "1e308",
    "1e309",
    "-1e308",
    "0.5",
    "(2**62) * 4",
    "'9223372036854775808' | int",
    "'nan' | float",
    "'inf' | float",
    "node.hardware.ram_gb * 2**40",
    "ollama_port ** 20",
];

/// Operands of generated expressions: what the context holds, and what it does not.
const OPERANDS: &[&str] = &[
    "node",
    "node.name",
    "node.host",
    "node.models",
    "node.hardware",
    "node.hardware.ram_gb",
    "node.vars",
    "node.labels",
    "node.os",
    "node.arch",
    "item",
    "ollama_port",
    "ollama_num_parallel",
    "fleet",
    "fleet.roles",
    "fleet.inventory_files",
    "nodes",
    "hq_url",
    "loop.index",
    "loop",
    "undefined_thing",
    "node.nosuch.deeper",
    "'a'",
    "''",
    "'ab\\ncd\\nef'",
    "'%s %s'",
    "'{{ x }}'",
    "'\\u0000'",
    "'x' * 1000",
    "[1, 2, 3]",
    "[[1, [2, [3]]]]",
    "{'a': 1, 'b': [2]}",
    "none",
    "true",
    "range(10)",
    "namespace()",
    "dict(a=1)",
    "env('HOME')",
    "env('FLEET_NO_SUCH_VARIABLE')",
];

/// Filters, `N` replaced by an extreme integer, `E` by an expression, `S` by a string.
const FILTERS: &[&str] = &[
    "indent(N)",
    "indent(N, true)",
    "indent(N, true, true)",
    "indent(N | int)",
    "center(N)",
    "truncate(N)",
    "truncate(N, true, S, N)",
    "wordwrap(N)",
    "batch(N)",
    "batch(N, S)",
    "slice(N)",
    "slice(N, S)",
    "round(N)",
    "round(N, 'floor')",
    "int",
    "int(N)",
    "int(S, N)",
    "float",
    "abs",
    "join",
    "join(S)",
    "replace(S, S)",
    "replace('', 'xxxxxxxxxxxxxxxx')",
    "format(E)",
    "format(E, E)",
    "tojson",
    "tojson(N)",
    "tojson(indent=N)",
    "pprint",
    "dictsort",
    "dictsort(by='value')",
    "unique",
    "reverse",
    "sort",
    "sort(reverse=true, attribute=S)",
    "list",
    "first",
    "last",
    "length",
    "sum",
    "min",
    "max",
    "title",
    "capitalize",
    "lower",
    "upper",
    "trim",
    "trim(S)",
    "string",
    "items",
    "map('upper')",
    "map(attribute=S)",
    "select('odd')",
    "select('divisibleby', N)",
    "reject('none')",
    "selectattr(S)",
    "groupby(S)",
    "attr(S)",
    "default(E)",
    "d(E, true)",
    "split",
    "split(S, N)",
    "lines",
    "escape",
    "safe",
    "urlencode",
    "bool",
    "count",
    "chain(E)",
    "zip(E)",
    "sha256",
    "shquote",
    "basename",
    "dirname",
    "rbquote",
    "systemd_quote",
    "nosuchfilter",
    "regex_replace('a', 'b')",
    "b64encode",
    "to_yaml",
    "mandatory",
];

const BINOPS: &[&str] = &[
    "+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">=", "in", "and", "or",
];

const TESTS: &[&str] = &[
    "defined",
    "undefined",
    "number",
    "string",
    "mapping",
    "sequence",
    "divisibleby(N)",
    "even",
    "odd",
    "sameas(E)",
    "startingwith(S)",
    "nosuchtest",
];

/// Byte sequences: invalid UTF-8, a byte order mark, line ends and controls.
const BYTE_SEQS: &[&[u8]] = &[
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\xef\xbb\xbf",
    b"\r",
    b"\r\n",
    b"\x0b",
    b"\x1b[31m",
    b"\xe2\x80\xa8",
];

/// Lines whose insertion breaks YAML structure in interesting ways.
const YAML_LINES: &[&str] = &[
    "---",
    "...",
    "--- !!map",
    "%YAML 1.2",
    "%TAG ! tag:x,2000:",
    "{",
    "[",
    "}",
    "- ",
    "-",
    ":",
    "? ",
    "? [a, b]",
    ": x",
    "key:",
    "key: value",
    "  - item",
    "\t- item",
    "\tkey: value",
    "<<: *a",
    "<<: [*a, *b]",
    "x: &a [1, 2]",
    "y: *a",
    "z: &b {k: *a}",
    "nodes:",
    "vars:",
    "tasks:",
    "- name: x",
    "  command: echo",
    "|",
    "  text",
    "\"",
    "'",
    "# comment",
    "#{{ x }}",
    "\u{feff}",
    "",
];

/// Template snippets with a hole `E` (expression) or `N` (integer) or `T` (template name).
const TEMPLATE_SNIPPETS: &[&str] = &[
    "{{ E }}",
    "{{ E }}",
    "{{ E }}",
    "{% for i in E %}{{ i }}{% endfor %}",
    "{% for i in range(N) %}{{ i }}{% endfor %}",
    "{% for i in range(N) %}{% for j in range(N) %}{{ j }}{% endfor %}{% endfor %}",
    "{% for i in range(N) %}{% for j in range(N) %}{% endfor %}{% endfor %}",
    "{% for k, v in E | items %}{{ k }}={{ v }}{% endfor %}",
    "{% for i in E recursive %}{{ loop(i) }}{% endfor %}",
    "{% for i in E %}{% if loop.index > 2 %}{% break %}{% endif %}{{ loop.previtem }}{% endfor %}",
    "{% set x = E %}{{ x }}",
    "{% set x = E %}{% set x = x ~ x ~ x ~ x %}{% set x = x ~ x ~ x ~ x %}{{ x }}",
    "{% set ns = namespace(a='x') %}{% for i in range(N) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a | length }}",
    "{% set ns = namespace(a='') %}{% for i in range(N) %}{% set ns.a = ns.a ~ 'xxxxxxxxxxxxxxxx' %}{% endfor %}{{ ns.a | length }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(0) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(N) }}",
    "{% macro m(a, b=E) %}{{ a }}{{ b }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(E, E, E, x=E) }}",
    "{% call(x) m() %}{{ x }}{% endcall %}",
    "{% include 'T' %}",
    "{% include E %}",
    "{% include 'no/such/template.j2' %}",
    "{% include ['no/such.j2', 'T'] ignore missing %}",
    "{% extends 'T' %}",
    "{% extends E %}{% block b %}x{% endblock %}",
    "{% block b %}{{ super() }}{% endblock %}",
    "{% import 'T' as m %}{{ m.x }}",
    "{% from 'T' import x %}{{ x }}",
    "{% filter indent(N) %}a\nb\nc{% endfilter %}",
    "{% filter upper | nosuchfilter %}x{% endfilter %}",
    "{% with x = E %}{{ x }}{% endwith %}",
    "{% if E %}a{% elif E %}b{% else %}c{% endif %}",
    "{% raw %}{{ E }}{% endraw %}",
    "{% autoescape true %}{{ E }}{% endautoescape %}",
    "{% break %}",
    "{% continue %}",
    "{{ E }}{# comment",
    "{#",
    "{{",
    "{%",
    "}}",
    "%}",
    "{{ }}",
    "{% %}",
    "{{ E | }}",
    "{{ E E }}",
    "{% endfor %}",
    "{% endif %}",
    "{% if E %}",
    "{% for %}",
    "{% raw %}",
    "{%- if E -%}x{%- endif -%}",
    "{{- E -}}",
    "{{ (((((((((((((((((((((((((((((((E))))))))))))))))))))))))))))))) }}",
    "{{ [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[E]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]] }}",
    "{{ E[N] }}",
    "{{ E[N:N:N] }}",
    "{{ E.nosuch.attr }}",
    "{{ E is T_EST }}",
    "{{ debug() }}",
    "{{ self }}",
    "{{ lipsum(N) }}",
    "{{ cycler(E, E).next() }}",
    "{{ joiner(E)() }}",
];

/// Keys used by fleet files besides the ones harvested from the corpus and the module specs.
const EXTRA_KEYS: &[&str] = &[
    "fleet",
    "vars",
    "groups",
    "nodes",
    "routing",
    "name",
    "hq",
    "hq_url",
    "ssh_config",
    "alert_webhook_env",
    "host",
    "role",
    "hardware",
    "models",
    "priority",
    "max_concurrent",
    "labels",
    "capabilities",
    "cpu",
    "chip",
    "model",
    "arch",
    "ram_gb",
    "cores",
    "disk_gb",
    "os",
    "gpu",
    "vendor",
    "vram_gb",
    "cloud_fallback",
    "rules",
    "provider",
    "api_key_env",
    "api_key",
    "base_url",
    "task",
    "capability",
    "fallback",
    "description",
    "requires",
    "includes",
    "defaults",
    "tasks",
    "handlers",
    "hosts",
    "roles",
    "become",
    "become_user",
    "include",
    "import_tasks",
    "<<",
    "",
    "~",
    "1",
    "\"{{ x }}\"",
];

// ---------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone, Copy)]
struct Tok {
    line: usize,
    start: usize,
    end: usize,
    key: bool,
}

/// Scalar tokens of a YAML text, block and flow, keys told apart from values: a rough
/// scanner, good enough to aim mutations (it need not agree with the parser).
fn scan(lines: &[Vec<u8>]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut depth = 0usize;
    for (n, l) in lines.iter().enumerate() {
        let mut i = 0;
        while i < l.len() {
            let c = l[i];
            if c == b'#' && (i == 0 || matches!(l[i - 1], b' ' | b'\t')) {
                break;
            }
            match c {
                b' ' | b'\t' | b'\r' | b',' => {
                    i += 1;
                    continue;
                }
                b'[' | b'{' => {
                    depth += 1;
                    i += 1;
                    continue;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    i += 1;
                    continue;
                }
                b'-' if i + 1 == l.len() || l[i + 1] == b' ' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let start = i;
            if c == b'"' || c == b'\'' {
                i += 1;
                while i < l.len() && l[i] != c {
                    if c == b'"' && l[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(l.len());
            } else {
                while i < l.len() {
                    let d = l[i];
                    if depth > 0 && matches!(d, b',' | b'[' | b']' | b'{' | b'}') {
                        break;
                    }
                    let next = l.get(i + 1).copied();
                    if d == b':'
                        && (next.is_none()
                            || matches!(next, Some(b' ' | b'\t'))
                            || (depth > 0 && matches!(next, Some(b',' | b'}' | b']'))))
                    {
                        break;
                    }
                    if d == b'#' && i > start && matches!(l[i - 1], b' ' | b'\t') {
                        break;
                    }
                    i += 1;
                }
            }
            let mut end = i;
            while end > start && matches!(l[end - 1], b' ' | b'\t') {
                end -= 1;
            }
            let mut j = i;
            while j < l.len() && l[j] == b' ' {
                j += 1;
            }
            let key = j < l.len()
                && l[j] == b':'
                && (j + 1 == l.len() || matches!(l[j + 1], b' ' | b'\t' | b',' | b'}' | b']'));
            if key {
                i = j + 1;
            }
            if end > start {
                toks.push(Tok {
                    line: n,
                    start,
                    end,
                    key,
                });
            }
        }
    }
    toks
}

fn split_lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
}

fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b'\n')
}

fn indent_of(l: &[u8]) -> usize {
    l.iter().take_while(|&&c| c == b' ').count()
}

/// A YAML double-quoted string holding `s`.
fn dq(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What mutations know about the repo.
struct Dict {
    keys: Vec<String>,
    modules: Vec<(&'static str, Vec<&'static str>, bool)>,
    templates: Vec<String>,
    names: Vec<String>,
}

impl Dict {
    fn new(base: &Files) -> Dict {
        let mut keys: BTreeSet<String> = EXTRA_KEYS.iter().map(|s| s.to_string()).collect();
        keys.extend(fleet::spec::task::COMMON_KEYS.iter().map(|s| s.to_string()));
        let mut modules = Vec::new();
        for m in fleet::modules::SPECS {
            keys.insert(m.name.to_string());
            let args: Vec<&'static str> = m.args.iter().map(|a| a.name).collect();
            keys.extend(args.iter().map(|s| s.to_string()));
            modules.push((m.name, args, m.free_form.is_some()));
        }
        let mut templates = Vec::new();
        let mut names = BTreeSet::new();
        for (path, e) in base {
            if let Some(t) = path.strip_prefix("templates/") {
                templates.push(t.to_string());
            }
            if let Some(r) = path.strip_prefix("roles/") {
                names.insert(r.split('/').next().unwrap_or_default().to_string());
            }
            if let Entry::File(b) = e
                && path.ends_with(".yaml")
            {
                let lines = split_lines(b);
                for t in scan(&lines) {
                    let text = String::from_utf8_lossy(&lines[t.line][t.start..t.end]).to_string();
                    if t.key {
                        keys.insert(text.clone());
                    }
                    if path.starts_with("inventory/") && text.len() < 40 {
                        names.insert(text);
                    }
                }
            }
        }
        Dict {
            keys: keys.into_iter().collect(),
            modules,
            templates,
            names: names.into_iter().collect(),
        }
    }
}

struct Mutator<'a> {
    rng: Rng,
    dict: &'a Dict,
    log: Vec<String>,
    /// Symlink mutations are drawn but not applied (`--no-links`), so the other inputs of a
    /// seed stay the same.
    no_links: bool,
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s: String = s.chars().take(160).collect();
    format!("{s:?}")
}

impl Mutator<'_> {
    fn int(&mut self) -> String {
        self.rng.pick(INTS).to_string()
    }

    fn string_expr(&mut self) -> String {
        match self.rng.below(6) {
            0 => "''".into(),
            1 => "'x'".into(),
            2 => "'\\n'".into(),
            3 => format!("'{}'", "y".repeat(self.rng.size(12))),
            4 => "'%s'".into(),
            _ => self.expr(2),
        }
    }

    fn fill(&mut self, pattern: &str, depth: u32) -> String {
        let mut out = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                'N' => out.push_str(&self.int()),
                'E' => out.push_str(&self.expr(depth + 1)),
                'S' => out.push_str(&self.string_expr()),
                'T' if chars.peek() == Some(&'_') => {
                    // T_EST: a test name.
                    for _ in 0..4 {
                        chars.next();
                    }
                    let t = self.rng.pick(TESTS).to_string();
                    let t = self.fill(&t, depth + 1);
                    out.push_str(&t);
                }
                'T' => {
                    let t = self.rng.pick(&self.dict.templates).clone();
                    out.push_str(&t);
                }
                c => out.push(c),
            }
        }
        out
    }

    /// A minijinja expression, often with extreme arguments.
    fn expr(&mut self, depth: u32) -> String {
        if depth >= 3 {
            return if self.rng.chance(50) {
                self.rng.pick(OPERANDS).to_string()
            } else {
                self.int()
            };
        }
        match self.rng.weighted(&[20, 30, 15, 5, 8, 5, 5, 5, 7]) {
            0 => self.rng.pick(OPERANDS).to_string(),
            1 => {
                let f = self.rng.pick(FILTERS).to_string();
                let f = self.fill(&f, depth + 1);
                let e = self.expr(depth + 1);
                format!("{e} | {f}")
            }
            2 => {
                let op = *self.rng.pick(BINOPS);
                let a = self.expr(depth + 1);
                let b = self.expr(depth + 1);
                format!("({a}) {op} ({b})")
            }
            3 => {
                let (a, b, c) = (
                    self.expr(depth + 1),
                    self.expr(depth + 1),
                    self.expr(depth + 1),
                );
                format!("({a}) if ({b}) else ({c})")
            }
            4 => {
                let e = self.expr(depth + 1);
                match self.rng.below(4) {
                    0 => format!("({e})[{}]", self.int()),
                    1 => format!("({e})[{}:{}:{}]", self.int(), self.int(), self.int()),
                    2 => format!("({e}).nosuch"),
                    _ => format!("({e})[{}]", self.expr(depth + 1)),
                }
            }
            5 => {
                let t = self.rng.pick(TESTS).to_string();
                let t = self.fill(&t, depth + 1);
                format!("({}) is {t}", self.expr(depth + 1))
            }
            6 => format!("range({})", self.int()),
            7 => format!("not ({})", self.expr(depth + 1)),
            _ => format!("-({})", self.expr(depth + 1)),
        }
    }

    fn template_snippet(&mut self) -> String {
        let s = self.rng.pick(TEMPLATE_SNIPPETS).to_string();
        self.fill(&s, 0)
    }

    /// A single-line YAML value, safe in block and flow context alike.
    fn value(&mut self, depth: u32) -> String {
        match self.rng.weighted(&[30, 22, 8, 10, 15, 3, 2, 5, 5]) {
            0 => self.rng.pick(SCALARS).to_string(),
            1 => dq(&format!("{{{{ {} }}}}", self.expr(0))),
            2 => dq(&format!("a {{{{ {} }}}} b", self.expr(0))),
            3 if depth < 3 => {
                let n = self.rng.below(4);
                if self.rng.chance(50) {
                    let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                    format!("[{}]", items.join(", "))
                } else {
                    let items: Vec<String> = (0..n)
                        .map(|_| {
                            let k = self.rng.pick(&self.dict.keys).clone();
                            let k = if k.is_empty() { "k".into() } else { k };
                            format!("{k}: {}", self.value(depth + 1))
                        })
                        .collect();
                    format!("{{{}}}", items.join(", "))
                }
            }
            4 => self.rng.pick(&self.dict.names).clone(),
            5 => {
                let s = "x".repeat(self.rng.size(20));
                if self.rng.chance(50) { s } else { dq(&s) }
            }
            6 => {
                let n = self.rng.size(10);
                let (open, close) = if self.rng.chance(50) {
                    ("[", "]")
                } else {
                    ("{a: ", "}")
                };
                format!("{}{}", open.repeat(n), close.repeat(n))
            }
            7 => format!("{}", self.rng.next() as i64 >> self.rng.below(64)),
            _ => {
                let t = self.rng.pick(&self.dict.templates).clone();
                if self.rng.chance(50) { t } else { dq(&t) }
            }
        }
    }

    fn key(&mut self, old: &[u8]) -> String {
        match self.rng.below(4) {
            0 | 1 => {
                // A typo.
                let mut k = old.to_vec();
                if k.is_empty() {
                    return "x".into();
                }
                let i = self.rng.below(k.len());
                match self.rng.below(4) {
                    0 => {
                        k.remove(i);
                    }
                    1 => k.insert(i, k[i]),
                    2 if k.len() > 1 => {
                        let j = (i + 1) % k.len();
                        k.swap(i, j)
                    }
                    _ => k[i] = b'a' + self.rng.below(26) as u8,
                }
                String::from_utf8_lossy(&k).into_owned()
            }
            2 => self.rng.pick(&self.dict.keys).clone(),
            _ => self.value(2),
        }
    }

    fn task(&mut self, indent: usize) -> Vec<u8> {
        let pad = " ".repeat(indent);
        let (name, args, free) = self.rng.pick(&self.dict.modules).clone();
        let mut s = format!("{pad}- name: fuzz {name}\n");
        if free && self.rng.chance(30) {
            let _ = writeln!(s, "{pad}  {name}: {}", self.value(0));
        } else {
            let n = self.rng.between(0, args.len().min(4));
            let mut fields = Vec::new();
            for _ in 0..n {
                let a = *self.rng.pick(&args);
                if !fields.iter().any(|(k, _): &(&str, String)| *k == a) {
                    fields.push((a, self.value(0)));
                }
            }
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "{pad}  {name}: {{ {} }}", body.join(", "));
        }
        for key in fleet::spec::task::COMMON_KEYS {
            if *key != "name" && self.rng.chance(12) {
                let v = if matches!(*key, "when" | "until" | "changed_when" | "failed_when") {
                    dq(&self.expr(0))
                } else {
                    self.value(0)
                };
                let _ = writeln!(s, "{pad}  {key}: {v}");
            }
        }
        s.into_bytes()
    }

    fn node(&mut self, indent: usize) -> Vec<u8> {
        let pad = " ".repeat(indent);
        let mut s = format!("{pad}fuzz{}:\n", self.rng.below(1000));
        let fields = [
            "host",
            "role",
            "hardware",
            "models",
            "priority",
            "max_concurrent",
            "labels",
            "capabilities",
            "vars",
        ];
        for f in fields {
            if !self.rng.chance(70) {
                continue;
            }
            let v = match f {
                "hardware" => {
                    let mut hw = Vec::new();
                    for k in ["cpu", "arch", "ram_gb", "cores", "disk_gb", "os", "gpu"] {
                        if self.rng.chance(60) {
                            hw.push(format!("{k}: {}", self.value(1)));
                        }
                    }
                    format!("{{ {} }}", hw.join(", "))
                }
                "role" if self.rng.chance(60) => self.rng.pick(&self.dict.names).clone(),
                _ => self.value(0),
            };
            let _ = writeln!(s, "{pad}  {f}: {v}");
        }
        s.into_bytes()
    }

    /// Lines to insert below a block key whose children are indented by `indent`.
    fn block_child(&mut self, key: &str, indent: usize) -> Option<Vec<u8>> {
        let pad = " ".repeat(indent);
        Some(match key {
            "tasks" | "handlers" => self.task(indent),
            "nodes" => self.node(indent),
            "vars" | "defaults" => format!(
                "{pad}{}: {}\n",
                self.rng.pick(&self.dict.keys).clone(),
                self.value(0)
            )
            .into_bytes(),
            "rules" => format!(
                "{pad}- task: {}\n{pad}  model: {}\n{pad}  fallback: [{}]\n",
                self.value(1),
                self.value(1),
                self.value(1)
            )
            .into_bytes(),
            "groups" => format!("{pad}g{}: {}\n", self.rng.below(100), self.value(0)).into_bytes(),
            _ => return None,
        })
    }

    /// One mutation of one file (or of the file set).
    fn mutate(&mut self, files: &mut Files) {
        let paths: Vec<String> = files.keys().cloned().collect();
        if paths.is_empty() {
            return;
        }
        // Files and file-set changes first, rarely.
        if self.rng.chance(3) {
            self.mutate_set(files, &paths);
            return;
        }
        let yaml: Vec<&String> = paths.iter().filter(|p| p.ends_with(".yaml")).collect();
        let tmpl: Vec<&String> = paths.iter().filter(|p| p.contains("templates/")).collect();
        let path = if self.rng.chance(70) && !yaml.is_empty() {
            // The inventory and roles hold most of the structure.
            let inv: Vec<&&String> = yaml
                .iter()
                .filter(|p| p.starts_with("inventory/"))
                .collect();
            if self.rng.chance(35) && !inv.is_empty() {
                (**self.rng.pick(&inv)).clone()
            } else {
                (*self.rng.pick(&yaml)).clone()
            }
        } else if !tmpl.is_empty() {
            (*self.rng.pick(&tmpl)).clone()
        } else {
            self.rng.pick(&paths).clone()
        };
        let Some(Entry::File(bytes)) = files.get(&path).cloned() else {
            return;
        };
        let new = if path.ends_with(".yaml") {
            self.mutate_yaml(&path, bytes)
        } else {
            self.mutate_template(&path, bytes)
        };
        files.insert(path, Entry::File(new));
    }

    fn mutate_set(&mut self, files: &mut Files, paths: &[String]) {
        match self.rng.below(9) {
            0 => {
                let p = self.rng.pick(paths).clone();
                files.remove(&p);
                self.log.push(format!("delete {p}"));
            }
            1 => {
                // A second inventory file: merged with the first.
                let src = files
                    .get("inventory/fleet.yaml")
                    .cloned()
                    .unwrap_or(Entry::File(Vec::new()));
                let content = match (self.rng.below(3), src) {
                    (0, Entry::File(b)) => b,
                    _ => {
                        let mut s = b"nodes:\n".to_vec();
                        s.extend(self.node(2));
                        s
                    }
                };
                files.insert("inventory/zz-fuzz.yaml".into(), Entry::File(content));
                self.log.push("add inventory/zz-fuzz.yaml".into());
            }
            2 => {
                let mut s = format!(
                    "description: {}\nrequires: {{ ram_gb: {} }}\ntasks:\n",
                    self.value(0),
                    self.value(0)
                )
                .into_bytes();
                for _ in 0..self.rng.between(1, 3) {
                    s.extend(self.task(2));
                }
                files.insert("roles/fuzz/role.yaml".into(), Entry::File(s));
                self.log.push("add roles/fuzz/role.yaml".into());
            }
            3 => {
                files.insert(
                    "roles/fuzz/templates/x.j2".into(),
                    Entry::File(b"x\n".to_vec()),
                );
                self.log
                    .push("add a role directory without role.yaml".into());
            }
            4 => {
                let name = *self.rng.pick(&[
                    "templates/fuzz.j2",
                    "templates/services/fuzz.service.j2",
                    "roles/ollama/templates/fuzz.j2",
                    "templates/we ird\nname.j2",
                    "templates/.hidden",
                ]);
                let s = self.template_snippet();
                self.log
                    .push(format!("add {name:?}: {}", short(s.as_bytes())));
                files.insert(name.into(), Entry::File(s.into_bytes()));
            }
            5 => {
                let mut s = format!("- name: fuzz play\n  hosts: {}\n  tasks:\n", self.value(0))
                    .into_bytes();
                s.extend(self.task(4));
                files.insert("playbooks/fuzz.yaml".into(), Entry::File(s));
                self.log.push("add playbooks/fuzz.yaml".into());
            }
            6 => {
                let target = *self.rng.pick(&[".", "..", "../..", "/", "/dev", "nosuch"]);
                let name = *self
                    .rng
                    .pick(&["templates/loop", "templates/services/loop"]);
                if self.no_links {
                    self.log
                        .push(format!("(skipped: symlink {name} -> {target})"));
                    return;
                }
                files.insert(name.into(), Entry::Link(target.into()));
                self.log.push(format!("symlink {name} -> {target}"));
            }
            7 => {
                let target = *self
                    .rng
                    .pick(&["/dev/zero", "/dev/null", "fleet.yaml", "/nosuch"]);
                let name = *self
                    .rng
                    .pick(&["inventory/link.yaml", "roles/agent/role.yaml"]);
                if self.no_links {
                    self.log
                        .push(format!("(skipped: symlink {name} -> {target})"));
                    return;
                }
                files.remove(name);
                files.insert(name.into(), Entry::Link(target.into()));
                self.log.push(format!("symlink {name} -> {target}"));
            }
            _ => {
                // A huge file.
                let p = self.rng.pick(paths).clone();
                if let Some(Entry::File(b)) = files.get_mut(&p) {
                    let line = if p.ends_with(".yaml") {
                        b"# padding padding padding padding padding padding padding\n".to_vec()
                    } else {
                        b"{{ node.name }} padding padding padding padding padding\n".to_vec()
                    };
                    let n = self.rng.size(17);
                    for _ in 0..n {
                        b.extend_from_slice(&line);
                    }
                    self.log.push(format!("{p}: append {n} lines"));
                }
            }
        }
    }

    fn line_op(&mut self, path: &str, lines: &mut Vec<Vec<u8>>) {
        let n = lines.len().max(1);
        let i = self.rng.below(n).min(lines.len().saturating_sub(1));
        if lines.is_empty() {
            lines.push(Vec::new());
        }
        match self.rng.below(7) {
            0 => {
                let l = lines.remove(i);
                self.log
                    .push(format!("{path}:{}: delete line {}", i + 1, short(&l)));
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
                self.log.push(format!("{path}:{}: duplicate line", i + 1));
            }
            2 => {
                let j = self.rng.below(lines.len());
                lines.swap(i, j);
                self.log
                    .push(format!("{path}:{}: swap with line {}", i + 1, j + 1));
            }
            3 => {
                let l = lines.remove(i);
                let j = self.rng.below(lines.len() + 1);
                lines.insert(j, l);
                self.log
                    .push(format!("{path}:{}: move to line {}", i + 1, j + 1));
            }
            4 => {
                let ind = indent_of(&lines[i]);
                let l = &mut lines[i];
                match self.rng.below(4) {
                    0 => {
                        let k = self.rng.between(1, 4);
                        l.splice(0..0, std::iter::repeat_n(b' ', k));
                        self.log.push(format!("{path}:{}: indent by {k}", i + 1));
                    }
                    1 => {
                        let k = self.rng.between(1, ind.max(1)).min(ind);
                        l.drain(0..k);
                        self.log.push(format!("{path}:{}: dedent by {k}", i + 1));
                    }
                    2 => {
                        l.splice(0..ind.min(2), [b'\t']);
                        self.log.push(format!("{path}:{}: tab indentation", i + 1));
                    }
                    _ => {
                        let k = self.rng.size(12);
                        l.splice(0..0, std::iter::repeat_n(b' ', k));
                        self.log.push(format!("{path}:{}: indent by {k}", i + 1));
                    }
                }
            }
            5 => {
                let j = self.rng.below(lines.len() + 1);
                let ind = lines.get(j).map_or(0, |l| indent_of(l));
                let junk = *self.rng.pick(YAML_LINES);
                let mut l = vec![b' '; if self.rng.chance(50) { ind } else { 0 }];
                l.extend_from_slice(junk.as_bytes());
                self.log
                    .push(format!("{path}:{}: insert line {junk:?}", j + 1));
                lines.insert(j, l);
            }
            _ => {
                let k = self.rng.between(1, lines.len());
                let at = self.rng.below(lines.len().saturating_sub(k) + 1);
                lines.drain(at..at + k);
                self.log
                    .push(format!("{path}:{}: delete {k} lines", at + 1));
            }
        }
    }

    fn byte_op(&mut self, path: &str, mut b: Vec<u8>) -> Vec<u8> {
        let at = self.rng.below(b.len() + 1);
        match self.rng.below(6) {
            0 => {
                let n = self.rng.between(1, 16);
                let junk: Vec<u8> = (0..n).map(|_| 1 + self.rng.below(255) as u8).collect();
                self.log.push(format!(
                    "{path}: insert {n} junk bytes at {at}: {junk:02x?}"
                ));
                b.splice(at..at, junk);
            }
            1 => {
                let seq = *self.rng.pick(BYTE_SEQS);
                self.log.push(format!("{path}: insert {seq:02x?} at {at}"));
                b.splice(at..at, seq.iter().copied());
            }
            2 => {
                b.splice(0..0, *b"\xef\xbb\xbf");
                self.log.push(format!("{path}: byte order mark"));
            }
            3 => {
                b.truncate(at);
                self.log.push(format!("{path}: truncate at {at}"));
            }
            4 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = 1 + self.rng.below(255) as u8;
                self.log.push(format!("{path}: byte {i} = {:02x}", b[i]));
            }
            _ => {
                let mut l = b"---\n".to_vec();
                if self.rng.chance(50) {
                    l.extend_from_slice(&b);
                }
                let at = if self.rng.chance(50) { 0 } else { b.len() };
                self.log.push(format!("{path}: second document at {at}"));
                b.splice(at..at, l);
            }
        }
        b
    }

    fn mutate_yaml(&mut self, path: &str, bytes: Vec<u8>) -> Vec<u8> {
        let mut lines = split_lines(&bytes);
        let toks = scan(&lines);
        let values: Vec<Tok> = toks.iter().copied().filter(|t| !t.key).collect();
        let keys: Vec<Tok> = toks.iter().copied().filter(|t| t.key).collect();
        let templated: Vec<Tok> = values
            .iter()
            .copied()
            .filter(|t| lines[t.line][t.start..t.end].windows(2).any(|w| w == b"{{"))
            .collect();
        let op = self.rng.weighted(&[22, 8, 8, 14, 10, 12, 14, 4, 3, 5]);
        let replace = |lines: &mut Vec<Vec<u8>>, t: Tok, with: &[u8]| {
            lines[t.line].splice(t.start..t.end, with.iter().copied());
        };
        match op {
            0 if !values.is_empty() => {
                let t = *self.rng.pick(&values);
                let v = self.value(0);
                self.log.push(format!(
                    "{path}:{}:{}: value {} -> {}",
                    t.line + 1,
                    t.start + 1,
                    short(&lines[t.line][t.start..t.end]),
                    short(v.as_bytes())
                ));
                replace(&mut lines, t, v.as_bytes());
            }
            1 if !keys.is_empty() => {
                let t = *self.rng.pick(&keys);
                let old = lines[t.line][t.start..t.end].to_vec();
                let k = self.key(&old);
                self.log.push(format!(
                    "{path}:{}:{}: key {} -> {}",
                    t.line + 1,
                    t.start + 1,
                    short(&old),
                    short(k.as_bytes())
                ));
                replace(&mut lines, t, k.as_bytes());
            }
            2 if !values.is_empty() || !keys.is_empty() => {
                // Type swap: a scalar becomes a collection or the other way round; a block
                // collection below a key becomes a scalar.
                if self.rng.chance(50) && !keys.is_empty() {
                    let t = *self.rng.pick(&keys);
                    let ind = indent_of(&lines[t.line]);
                    let mut end = t.line + 1;
                    while end < lines.len()
                        && (indent_of(&lines[end]) > ind
                            || lines[end].iter().all(|c| *c == b' ')
                            || lines[end].get(ind) == Some(&b'-'))
                    {
                        end += 1;
                    }
                    let v = self.value(1);
                    let line = &mut lines[t.line];
                    line.truncate(t.end);
                    line.extend_from_slice(format!(": {v}").as_bytes());
                    let gone = end - t.line - 1;
                    lines.drain(t.line + 1..end);
                    self.log.push(format!(
                        "{path}:{}: value of key (and {gone} lines below) -> {}",
                        t.line + 1,
                        short(v.as_bytes())
                    ));
                } else if !values.is_empty() {
                    let t = *self.rng.pick(&values);
                    let ind = indent_of(&lines[t.line]);
                    let old = lines[t.line][t.start..t.end].to_vec();
                    let v: Vec<u8> = match self.rng.below(5) {
                        0 => [b"[".as_slice(), &old, b"]"].concat(),
                        1 => [b"{k: ".as_slice(), &old, b"}"].concat(),
                        2 => format!("\n{}  - {}", " ".repeat(ind), String::from_utf8_lossy(&old))
                            .into_bytes(),
                        3 => format!(
                            "\n{}  k: {}",
                            " ".repeat(ind),
                            String::from_utf8_lossy(&old)
                        )
                        .into_bytes(),
                        _ => b"~".to_vec(),
                    };
                    self.log.push(format!(
                        "{path}:{}:{}: type swap {} -> {}",
                        t.line + 1,
                        t.start + 1,
                        short(&old),
                        short(&v)
                    ));
                    replace(&mut lines, t, &v);
                }
            }
            3 if !templated.is_empty() || !values.is_empty() => {
                // An expression into a template string that is already there, or a whole new one.
                if !templated.is_empty() && self.rng.chance(60) {
                    let t = *self.rng.pick(&templated);
                    let text = lines[t.line][t.start..t.end].to_vec();
                    let close = text.windows(2).rposition(|w| w == b"}}");
                    let (new, what) = match close {
                        Some(c) if self.rng.chance(60) => {
                            let f = self.rng.pick(FILTERS).to_string();
                            let f = self.fill(&f, 1);
                            let f = if text.first() == Some(&b'"') {
                                dq(&f).trim_matches('"').to_string()
                            } else {
                                f
                            };
                            let mut n = text[..c].to_vec();
                            n.extend_from_slice(format!("| {f} ").as_bytes());
                            n.extend_from_slice(&text[c..]);
                            (n, format!("filter | {f}"))
                        }
                        _ => {
                            let v = dq(&format!("{{{{ {} }}}}", self.expr(0)));
                            (v.clone().into_bytes(), format!("expression {v}"))
                        }
                    };
                    self.log.push(format!(
                        "{path}:{}:{}: template {} -> {what}",
                        t.line + 1,
                        t.start + 1,
                        short(&text)
                    ));
                    replace(&mut lines, t, &new);
                } else {
                    let t = *self.rng.pick(&values);
                    let v = if self.rng.chance(30) {
                        dq(&self.template_snippet())
                    } else {
                        dq(&format!("{{{{ {} }}}}", self.expr(0)))
                    };
                    self.log.push(format!(
                        "{path}:{}:{}: value {} -> {}",
                        t.line + 1,
                        t.start + 1,
                        short(&lines[t.line][t.start..t.end]),
                        short(v.as_bytes())
                    ));
                    replace(&mut lines, t, v.as_bytes());
                }
            }
            4 => self.line_op(path, &mut lines),
            5 => {
                // A block of structure below a key that takes one (task, node, variable …).
                let slots: Vec<(usize, String)> = keys
                    .iter()
                    .filter_map(|t| {
                        let k = String::from_utf8_lossy(&lines[t.line][t.start..t.end]);
                        let rest = &lines[t.line][t.end..];
                        let bare = rest.iter().skip(1).all(|c| *c == b' ');
                        (bare
                            && matches!(
                                k.as_ref(),
                                "tasks"
                                    | "handlers"
                                    | "nodes"
                                    | "vars"
                                    | "defaults"
                                    | "rules"
                                    | "groups"
                            ))
                        .then(|| (t.line, k.into_owned()))
                    })
                    .collect();
                if slots.is_empty() {
                    if path.starts_with("roles/") {
                        let mut b = join_lines(&lines);
                        b.extend_from_slice(b"\ntasks:\n");
                        b.extend(self.task(2));
                        lines = split_lines(&b);
                        self.log.push(format!("{path}: append a task list"));
                    } else {
                        self.line_op(path, &mut lines);
                    }
                } else {
                    let (at, key) = self.rng.pick(&slots).clone();
                    let ind = indent_of(&lines[at]);
                    let child = lines
                        .get(at + 1)
                        .map(|l| indent_of(l))
                        .filter(|&c| c > ind || lines[at + 1].get(c) == Some(&b'-'))
                        .unwrap_or(ind + 2);
                    if let Some(block) = self.block_child(&key, child) {
                        self.log.push(format!(
                            "{path}:{}: insert below `{key}`: {}",
                            at + 2,
                            short(&block)
                        ));
                        let mut new = split_lines(&block);
                        new.pop();
                        let tail = lines.split_off(at + 1);
                        lines.extend(new);
                        lines.extend(tail);
                    }
                }
            }
            6 if !values.is_empty() => {
                let t = *self.rng.pick(&values);
                let s = self.rng.pick(SCALARS).to_string();
                self.log.push(format!(
                    "{path}:{}:{}: value {} -> {}",
                    t.line + 1,
                    t.start + 1,
                    short(&lines[t.line][t.start..t.end]),
                    short(s.as_bytes())
                ));
                replace(&mut lines, t, s.as_bytes());
            }
            7 if self.rng.chance(25) => {
                // A chain of anchors, each aliasing the one before `fanout` times: values
                // grow as fanout^n and depth as n while the parser's nesting stays at 2.
                let n = self.rng.between(1, 64);
                let fanout = self.rng.between(1, 10);
                let mut b = join_lines(&lines);
                b.extend_from_slice(b"\nx-fuzz:\n  k0: &k0 [v]\n");
                for i in 1..=n {
                    let items = vec![format!("*k{}", i - 1); fanout].join(", ");
                    b.extend_from_slice(format!("  k{i}: &k{i} [{items}]\n").as_bytes());
                }
                self.log.push(format!(
                    "{path}: append an alias chain of {n}, fanout {fanout}"
                ));
                return b;
            }
            7 if values.len() >= 2 => {
                // Anchors and aliases.
                let a = *self.rng.pick(&values);
                let b = *self.rng.pick(&values);
                let name = *self.rng.pick(&["a", "b", "x"]);
                let alias = if self.rng.chance(20) {
                    "*nosuch".to_string()
                } else {
                    format!("*{name}")
                };
                self.log.push(format!(
                    "{path}: anchor &{name} at {}:{}, alias {alias} at {}:{}",
                    a.line + 1,
                    a.start + 1,
                    b.line + 1,
                    b.start + 1
                ));
                // The later position first, so the earlier one stays valid.
                let (first, second, first_text, second_text) =
                    if (b.line, b.start) > (a.line, a.start) {
                        (a, b, format!("&{name} "), alias.clone())
                    } else {
                        (b, a, alias.clone(), format!("&{name} "))
                    };
                replace(&mut lines, second, second_text.as_bytes());
                if (first.line, first.end) <= (second.line, second.start)
                    || first.line != second.line
                {
                    if first_text.starts_with('&') {
                        lines[first.line].splice(first.start..first.start, first_text.bytes());
                    } else {
                        replace(&mut lines, first, first_text.as_bytes());
                    }
                }
            }
            8 if !values.is_empty() => {
                let t = *self.rng.pick(&values);
                let n = self.rng.size(14);
                let v = match self.rng.below(4) {
                    0 => format!("{}{}", "[".repeat(n), "]".repeat(n)),
                    1 => format!("{}x{}", "{a: ".repeat(n), "}".repeat(n)),
                    2 => format!("{}x", "- ".repeat(n.min(2000))),
                    _ => "x".repeat(n * 64),
                };
                self.log.push(format!(
                    "{path}:{}:{}: value -> {} ({} bytes)",
                    t.line + 1,
                    t.start + 1,
                    short(v.as_bytes()),
                    v.len()
                ));
                replace(&mut lines, t, v.as_bytes());
            }
            _ => return self.byte_op(path, join_lines(&lines)),
        }
        join_lines(&lines)
    }

    fn mutate_template(&mut self, path: &str, bytes: Vec<u8>) -> Vec<u8> {
        match self.rng.weighted(&[45, 15, 20, 10, 10]) {
            0 => {
                let s = self.template_snippet();
                let at = if self.rng.chance(50) {
                    // At a line start, where trim_blocks/lstrip_blocks apply.
                    let starts: Vec<usize> = std::iter::once(0)
                        .chain(
                            bytes
                                .iter()
                                .enumerate()
                                .filter(|(_, c)| **c == b'\n')
                                .map(|(i, _)| i + 1),
                        )
                        .collect();
                    *self.rng.pick(&starts)
                } else {
                    self.rng.below(bytes.len() + 1)
                };
                self.log.push(format!(
                    "{path}: insert at byte {at}: {}",
                    short(s.as_bytes())
                ));
                let mut b = bytes;
                b.splice(at..at, s.into_bytes());
                b
            }
            1 => {
                // Replace an expression that is there.
                let opens: Vec<usize> = bytes
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| *w == b"{{")
                    .map(|(i, _)| i)
                    .collect();
                if opens.is_empty() {
                    return self.byte_op(path, bytes);
                }
                let at = *self.rng.pick(&opens);
                let Some(len) = bytes[at..].windows(2).position(|w| w == b"}}") else {
                    return self.byte_op(path, bytes);
                };
                let old = bytes[at..at + len + 2].to_vec();
                let new = if self.rng.chance(50) {
                    let f = self.rng.pick(FILTERS).to_string();
                    let f = self.fill(&f, 1);
                    let mut n = old[..old.len() - 2].to_vec();
                    n.extend_from_slice(format!("| {f} }}}}").as_bytes());
                    n
                } else {
                    format!("{{{{ {} }}}}", self.expr(0)).into_bytes()
                };
                self.log
                    .push(format!("{path}: {} -> {}", short(&old), short(&new)));
                let mut b = bytes;
                b.splice(at..at + old.len(), new);
                b
            }
            2 => {
                let mut lines = split_lines(&bytes);
                self.line_op(path, &mut lines);
                join_lines(&lines)
            }
            3 => {
                let s = self.template_snippet();
                self.log
                    .push(format!("{path}: replace with {}", short(s.as_bytes())));
                s.into_bytes()
            }
            _ => self.byte_op(path, bytes),
        }
    }
}

/// Input `index` of `seed`: the base repo with 1–4 mutations, and what they were.
fn make_input(
    base: &Files,
    dict: &Dict,
    seed: u64,
    index: u64,
    no_links: bool,
) -> (Files, Vec<String>) {
    let mut m = Mutator {
        rng: Rng::new(input_seed(seed, index)),
        dict,
        log: Vec::new(),
        no_links,
    };
    let mut files = base.clone();
    let n = 1 + m.rng.weighted(&[45, 30, 15, 10]);
    for _ in 0..n {
        m.mutate(&mut files);
    }
    (files, m.log)
}

// ---------------------------------------------------------------------------------------
// Running an input.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Panic,
    Caught,
    Unlocated,
    Misplaced,
    Slow,
    Abort,
    Hang,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Panic => "panic",
            Kind::Caught => "caught",
            Kind::Unlocated => "unlocated",
            Kind::Misplaced => "misplaced",
            Kind::Slow => "slow",
            Kind::Abort => "abort",
            Kind::Hang => "hang",
        }
    }
}

#[derive(Debug, Clone)]
struct Finding {
    kind: Kind,
    /// What identifies it across inputs (for keeping one example of each).
    signature: String,
    detail: String,
}

#[derive(Debug, Default)]
struct Outcome {
    /// Validate and plan both passed.
    clean: bool,
    errors: usize,
    findings: Vec<Finding>,
    /// Everything fleet said, for the record.
    transcript: String,
}

thread_local! {
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Errors that have no place in a file, by design: documented in docs/fuzzing.md.
fn may_be_unlocated(message: &str) -> bool {
    message.starts_with("no inventory in ")
}

/// Digits and backticked names out, so one bug is one signature.
fn normalize(message: &str) -> String {
    let mut out = String::new();
    let mut in_tick = false;
    for c in message.chars() {
        match c {
            '`' => {
                in_tick = !in_tick;
                out.push('`');
            }
            _ if in_tick => {}
            c if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            c => out.push(c),
        }
    }
    out.chars().take(100).collect()
}

fn check_loc(
    loc: &fleet::error::Loc,
    cache: &mut HashMap<Arc<str>, Option<Vec<usize>>>,
) -> Result<(), String> {
    if loc.file.starts_with("<built-in>/") {
        return Ok(());
    }
    let lines = cache.entry(loc.file.clone()).or_insert_with(|| {
        let p = Path::new(loc.file.as_ref());
        if p.is_dir() {
            return Some(Vec::new());
        }
        let text = String::from_utf8_lossy(&std::fs::read(p).ok()?).into_owned();
        // YAML counts `\r\n`, `\r` and `\n` as line breaks; templates only `\n`.
        let text = if loc.file.ends_with(".yaml") || loc.file.ends_with(".yml") {
            text.replace("\r\n", "\n").replace('\r', "\n")
        } else {
            text
        };
        Some(text.split('\n').map(|l| l.chars().count()).collect())
    });
    let Some(lines) = lines else {
        return Err(format!("`{}` is not a file of the repo", loc.file));
    };
    if loc.line == 0 || loc.col == 0 {
        return Err("line or column 0".into());
    }
    if lines.is_empty() {
        return if loc.line == 1 {
            Ok(())
        } else {
            Err("a line in a directory".into())
        };
    }
    let line = loc.line as usize;
    if line > lines.len() {
        return Err(format!(
            "line {line} of a file whose last line is {}",
            lines.len()
        ));
    }
    if loc.col as usize > lines[line - 1] + 2 {
        return Err(format!(
            "column {} of a line of {} characters",
            loc.col,
            lines[line - 1]
        ));
    }
    Ok(())
}

/// What `fleet validate` and `fleet plan playbooks/site.yaml` do, minus the printing.
fn exercise(out: &mut Outcome) {
    // The root as `fleet` finds it: the working directory, absolute.
    let root = std::env::current_dir().expect("fuzz: the working directory");
    // fleet validate
    let repo = fleet::repo::Repo::load(&root);
    let (diags, _summary) = fleet::validate::validate(&repo);
    let _ = writeln!(
        out.transcript,
        "$ fleet validate\n{}",
        fleet::error::Error::Config(diags.clone())
    );
    let mut all: Vec<fleet::error::Diagnostic> = diags.sorted().into_iter().cloned().collect();
    let valid = !diags.has_errors();

    // fleet plan playbooks/site.yaml (with --diff: file contents kept and shown)
    let mut planned = false;
    let _ = writeln!(out.transcript, "$ fleet plan --diff playbooks/site.yaml");
    if repo.diags.has_errors() {
        let _ = writeln!(out.transcript, "(the repo does not load)");
    } else {
        match repo.load_playbook(Path::new("playbooks/site.yaml")) {
            Err(e) => {
                let _ = writeln!(out.transcript, "{e}");
            }
            Ok((pb, mut pdiags)) => {
                if !pdiags.has_errors() {
                    let library = fleet::template::Library::new(&repo.templates);
                    let opts = fleet::plan::PlanOptions {
                        with_content: true,
                        ..Default::default()
                    };
                    let (plan, plan_diags) =
                        fleet::plan::plan_playbook(&repo, &library, &pb, &opts);
                    pdiags.extend(plan_diags);
                    if !pdiags.has_errors() {
                        let text = fleet::cli::plan::human(&plan, true);
                        let json = serde_json::to_string_pretty(&plan).unwrap_or_default();
                        let _ = writeln!(
                            out.transcript,
                            "(plan: {} bytes, json {} bytes)",
                            text.len(),
                            json.len()
                        );
                        planned = true;
                    }
                }
                if pdiags.has_errors() {
                    let _ = writeln!(
                        out.transcript,
                        "{}",
                        fleet::error::Error::Config(pdiags.clone())
                    );
                }
                all.extend(pdiags.sorted().into_iter().cloned());
            }
        }
    }
    out.clean = valid && planned;

    let mut cache = HashMap::new();
    for d in &all {
        if d.severity != fleet::error::Severity::Error {
            continue;
        }
        out.errors += 1;
        if d.message.contains("internal error: panicked") {
            out.findings.push(Finding {
                kind: Kind::Caught,
                signature: normalize(&d.message),
                detail: d.to_string(),
            });
        }
        match &d.loc {
            None if may_be_unlocated(&d.message) => {}
            None => out.findings.push(Finding {
                kind: Kind::Unlocated,
                signature: normalize(&d.message),
                detail: d.to_string(),
            }),
            Some(loc) => {
                if let Err(why) = check_loc(loc, &mut cache) {
                    out.findings.push(Finding {
                        kind: Kind::Misplaced,
                        signature: normalize(&format!("{why}: {}", d.message)),
                        detail: format!("{why}\n{d}"),
                    });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// State, findings, the driver loop.

#[derive(Debug, Default, Clone)]
struct Counts {
    inputs: u64,
    clean: u64,
    rejected: u64,
    by_kind: BTreeMap<&'static str, u64>,
    max_ms: u64,
    /// When the run started (its first segment), ms since the epoch.
    started_ms: u64,
}

const KINDS: &[Kind] = &[
    Kind::Panic,
    Kind::Abort,
    Kind::Hang,
    Kind::Unlocated,
    Kind::Caught,
    Kind::Slow,
    Kind::Misplaced,
];

struct State {
    seed: u64,
    next: u64,
    running: Option<u64>,
    counts: Counts,
}

impl State {
    fn save(&self, path: &Path) {
        let mut s = format!(
            "seed={}\nnext={}\ninputs={}\nclean={}\nrejected={}\nmax_ms={}\nstarted_ms={}\n",
            self.seed,
            self.next,
            self.counts.inputs,
            self.counts.clean,
            self.counts.rejected,
            self.counts.max_ms,
            self.counts.started_ms
        );
        if let Some(r) = self.running {
            let _ = writeln!(s, "running={r}");
        }
        for k in KINDS {
            let _ = writeln!(
                s,
                "{}={}",
                k.name(),
                self.counts.by_kind.get(k.name()).copied().unwrap_or(0)
            );
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, s).expect("fuzz: write the state file");
        std::fs::rename(&tmp, path).expect("fuzz: write the state file");
    }

    fn load(path: &Path) -> Option<State> {
        let text = std::fs::read_to_string(path).ok()?;
        let map: HashMap<&str, u64> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        let get = |k: &str| map.get(k).copied().unwrap_or(0);
        let mut counts = Counts {
            inputs: get("inputs"),
            clean: get("clean"),
            rejected: get("rejected"),
            max_ms: get("max_ms"),
            started_ms: get("started_ms"),
            ..Counts::default()
        };
        for k in KINDS {
            counts.by_kind.insert(k.name(), get(k.name()));
        }
        Some(State {
            seed: get("seed"),
            next: get("next"),
            running: map.get("running").copied(),
            counts,
        })
    }
}

struct Recorder {
    out: PathBuf,
    seen: BTreeSet<(Kind, String)>,
    fleet_bin: Option<PathBuf>,
    log: std::io::BufWriter<std::fs::File>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("fuzz: create a findings directory");
    let Ok(rd) = std::fs::read_dir(from) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(t) = std::fs::read_link(&p) {
                let _ = std::os::unix::fs::symlink(t, &dest);
            }
        } else if meta.is_dir() {
            copy_dir(&p, &dest);
        } else {
            let _ = std::fs::copy(&p, &dest);
        }
    }
}

/// Runs the real `fleet` binary on a saved input, with a time limit; its output for the record.
fn run_fleet(bin: &Path, repo: &Path, args: &[&str]) -> String {
    let child = std::process::Command::new(bin)
        .args(args)
        .current_dir(repo)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("cannot run {}: {e}", bin.display()),
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break format!("{s}"),
            Ok(None) if start.elapsed() > Duration::from_secs(5) => {
                let _ = child.kill();
                let _ = child.wait();
                break "killed after 5 s".to_string();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break format!("wait failed: {e}"),
        }
    };
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        err = String::from_utf8_lossy(&buf).chars().take(20_000).collect();
    }
    format!(
        "$ fleet {} ({:.2} s, {status})\n{err}",
        args.join(" "),
        start.elapsed().as_secs_f64()
    )
}

impl Recorder {
    /// Logs a finding; the first of its signature keeps a copy of the input.
    fn record(&mut self, f: &Finding, seed: u64, index: u64, input: &str, transcript: &str) {
        let _ = writeln!(
            self.log,
            "{} seed={seed} index={index}: {}",
            f.kind.name(),
            f.signature
        );
        let _ = self.log.flush();
        if self.seen.len() >= 500 || !self.seen.insert((f.kind, f.signature.clone())) {
            return;
        }
        let dir = self
            .out
            .join("findings")
            .join(format!("{}-{seed}-{index}", f.kind.name()));
        if dir.exists() {
            return;
        }
        copy_dir(&self.out.join("current"), &dir.join("repo"));
        let mut text = format!(
            "kind: {}\nsignature: {}\nseed: {seed}\nindex: {index}\nreplay: target/release/examples/fuzz --seed {seed} --start {index} --count 1 --out target/fuzz-replay -v\n\n{}\n\n--- the input\n{input}\n--- fleet (in-process)\n{transcript}\n",
            f.kind.name(),
            f.signature,
            f.detail
        );
        // The real binary on the input, for the record (not on hangs and slow inputs: they
        // would only spend the run's time again).
        if let Some(bin) = self
            .fleet_bin
            .as_ref()
            .filter(|_| !matches!(f.kind, Kind::Hang | Kind::Slow))
        {
            let repo = dir.join("repo");
            text.push_str("--- the fleet binary\n");
            text.push_str(&run_fleet(bin, &repo, &["validate"]));
            text.push('\n');
            text.push_str(&run_fleet(bin, &repo, &["plan", "playbooks/site.yaml"]));
        }
        let _ = std::fs::write(dir.join("finding.txt"), text);
    }
}

/// Records input `i`, on which the previous process died (a signal, or the watchdog).
fn record_death(
    state: &mut State,
    rec: &mut Recorder,
    outcomes: &mut impl std::io::Write,
    out: &Path,
    i: u64,
    hang_ms: u64,
    hang: bool,
) {
    let kind = if hang { Kind::Hang } else { Kind::Abort };
    let input = std::fs::read_to_string(out.join("current.txt")).unwrap_or_default();
    let f = Finding {
        kind,
        signature: format!("input {i}"),
        detail: if hang {
            format!("input {i} ran longer than {hang_ms} ms")
        } else {
            format!("the process died while running input {i} (a signal: abort, segfault, OOM)")
        },
    };
    *state.counts.by_kind.entry(kind.name()).or_default() += 1;
    state.counts.inputs += 1;
    let _ = writeln!(outcomes, "{i} {} - -", kind.name());
    rec.record(&f, state.seed, i, &input, "");
    state.next = i + 1;
    let _ = std::fs::remove_file(out.join("hang"));
}

/// Millisecond clock of the input being run (0: none), for the watchdog.
static RUNNING_SINCE: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn usage() -> ! {
    eprintln!(
        "usage: fuzz [--seed S] [--seconds N | --until EPOCH] [--count N] [--start I] [--out DIR]\n            [--base DIR] [--resume] [--budget-ms MS] [--hang-ms MS] [--mem-mb MB] [--no-links] [-v]"
    );
    std::process::exit(2)
}

struct Opts {
    seed: u64,
    until: Option<u64>,
    count: Option<u64>,
    start: u64,
    out: PathBuf,
    base: PathBuf,
    resume: bool,
    budget_ms: u64,
    hang_ms: u64,
    mem_mb: u64,
    no_links: bool,
    verbose: bool,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        seed: 1,
        until: None,
        count: None,
        start: 0,
        out: PathBuf::from("target/fuzz"),
        base: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        resume: false,
        budget_ms: 2000,
        hang_ms: 5_000,
        mem_mb: 8192,
        no_links: false,
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--seed" => o.seed = num(),
            "--seconds" => o.until = Some(now_ms() / 1000 + num()),
            "--until" => o.until = Some(num()),
            "--count" => o.count = Some(num()),
            "--start" => o.start = num(),
            "--budget-ms" => o.budget_ms = num(),
            "--hang-ms" => o.hang_ms = num(),
            "--mem-mb" => o.mem_mb = num(),
            "--out" => o.out = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--base" => o.base = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--resume" => o.resume = true,
            "--no-links" => o.no_links = true,
            "-v" | "--verbose" => o.verbose = true,
            _ => usage(),
        }
    }
    if o.until.is_none() && o.count.is_none() {
        o.until = Some(now_ms() / 1000 + 60);
    }
    o
}

fn main() {
    let o = parse_args();
    std::fs::create_dir_all(&o.out).expect("fuzz: create the output directory");
    let out = o.out.canonicalize().expect("fuzz: the output directory");
    let base_dir = o.base.canonicalize().expect("fuzz: the base repo");
    if o.mem_mb > 0 {
        let bytes = o.mem_mb * 1024 * 1024;
        if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
            eprintln!("fuzz: cannot limit memory: {e}");
        }
    }

    // Panics: fleet's hook records them for its own guards; ours counts every one, caught
    // or not, and keeps the default hook's printing out of the way.
    std::panic::set_hook(Box::new(|_| {}));
    fleet::panic::install();
    let fleet_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        PANICS.with(|p| p.borrow_mut().push(format!("panicked at {loc}: {msg}")));
        fleet_hook(info);
    }));

    let state_path = out.join("state");
    let mut state = State {
        seed: o.seed,
        next: o.start,
        running: None,
        counts: Counts {
            started_ms: now_ms(),
            ..Counts::default()
        },
    };
    let base = read_base(&base_dir);
    let base_dirs = dirs_of(&base);
    let dict = Dict::new(&base);
    let current = out.join("current");
    let fleet_bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("fleet")))
        .filter(|p| p.is_file());
    let mut rec = Recorder {
        out: out.clone(),
        seen: BTreeSet::new(),
        fleet_bin,
        log: std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out.join("findings.log"))
                .expect("fuzz: open findings.log"),
        ),
    };
    // The signatures already kept by earlier segments of this run.
    if let Ok(rd) = std::fs::read_dir(out.join("findings")) {
        rec.seen.extend(rd.flatten().filter_map(|e| {
            let t = std::fs::read_to_string(e.path().join("finding.txt")).ok()?;
            let kind = KINDS
                .iter()
                .copied()
                .find(|k| t.starts_with(&format!("kind: {}\n", k.name())))?;
            let sig = t.lines().find_map(|l| l.strip_prefix("signature: "))?;
            Some((kind, sig.to_string()))
        }));
    }
    // Unbuffered: one line per input survives the process dying on the next.
    let mut outcomes = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("outcomes.log"))
        .expect("fuzz: open outcomes.log");

    if o.resume
        && let Some(prev) = State::load(&state_path)
        && prev.seed == o.seed
    {
        state = prev;
        if let Some(i) = state.running.take() {
            let marker = |name: &str| {
                std::fs::read_to_string(out.join(name))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    == Some(i)
            };
            if marker("deadline") {
                // Stopped at the deadline: not an input tried, not a finding.
                state.next = i;
                let _ = std::fs::remove_file(out.join("deadline"));
            } else {
                record_death(
                    &mut state,
                    &mut rec,
                    &mut outcomes,
                    &out,
                    i,
                    o.hang_ms,
                    marker("hang"),
                );
            }
        }
    } else {
        let _ = std::fs::remove_dir_all(&current);
    }

    // Start from the base repo, in `current`, which is where every input runs.
    let _ = std::fs::remove_dir_all(&current);
    std::fs::create_dir_all(&current).expect("fuzz: create the work directory");
    sync(&current, &Files::new(), &base, &base_dirs);
    std::env::set_current_dir(&current).expect("fuzz: enter the work directory");
    let mut on_disk = base.clone();

    // The base repo itself should be clean, or every input starts from a broken repo.
    let mut base_outcome = Outcome::default();
    let base_ok =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&mut base_outcome)))
            .is_ok();
    let base_note = if base_ok && base_outcome.clean {
        "the base repo is clean".to_string()
    } else {
        let first = base_outcome
            .transcript
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("a panic")
            .to_string();
        eprintln!("fuzz: warning: the base repo does not pass validate + plan: {first}");
        format!(
            "the base repo itself fails ({} errors; first: {first})",
            base_outcome.errors
        )
    };

    {
        let hang_ms = o.hang_ms;
        let until_ms = o.until.map(|u| u * 1000);
        let out = out.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let since = RUNNING_SINCE.load(Ordering::SeqCst);
                if since == 0 {
                    continue;
                }
                let now = now_ms();
                let (marker, code) = if now.saturating_sub(since) > hang_ms {
                    eprintln!("fuzz: an input ran longer than {hang_ms} ms; stopping");
                    ("hang", 3)
                } else if until_ms.is_some_and(|u| now > u) {
                    // Time is up: the input is dropped (not counted), so a run stays in its
                    // time (and CPU) budget even when its last input is slow.
                    ("deadline", 4)
                } else {
                    continue;
                };
                let index = std::fs::read_to_string(out.join("state"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("running=").map(str::to_string))
                    })
                    .unwrap_or_default();
                let _ = std::fs::write(out.join(marker), index);
                std::process::exit(code);
            }
        });
    }

    let mut ran = 0u64;
    loop {
        if o.count.is_some_and(|c| ran >= c) || o.until.is_some_and(|u| now_ms() / 1000 >= u) {
            break;
        }
        let index = state.next;
        let (files, log) = make_input(&base, &dict, state.seed, index, o.no_links);
        let hash = fnv(&files);
        sync(&current, &on_disk, &files, &base_dirs);
        on_disk = files;
        let input = format!(
            "seed {} index {index} hash {hash:016x}\n{}\n",
            state.seed,
            log.join("\n")
        );
        std::fs::write(out.join("current.txt"), &input).expect("fuzz: write current.txt");
        state.running = Some(index);
        state.save(&state_path);

        PANICS.with(|p| p.borrow_mut().clear());
        let t0 = Instant::now();
        RUNNING_SINCE.store(now_ms().max(1), Ordering::SeqCst);
        let mut outcome = Outcome::default();
        let escaped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&mut outcome)));
        RUNNING_SINCE.store(0, Ordering::SeqCst);
        let ms = t0.elapsed().as_millis() as u64;

        let panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
        if escaped.is_err() {
            let last = panics.last().cloned().unwrap_or_default();
            outcome.findings.push(Finding {
                kind: Kind::Panic,
                signature: normalize(last.split(": ").next().unwrap_or_default()),
                detail: last,
            });
        } else if !panics.is_empty() && !outcome.findings.iter().any(|f| f.kind == Kind::Caught) {
            // A panic fleet caught but did not report as an internal error.
            outcome.findings.push(Finding {
                kind: Kind::Caught,
                signature: normalize(&panics[0]),
                detail: panics.join("\n"),
            });
        }
        if ms > o.budget_ms {
            outcome.findings.push(Finding {
                kind: Kind::Slow,
                signature: format!("input {index}"),
                detail: format!("validate + plan took {ms} ms (budget {} ms)", o.budget_ms),
            });
        }

        state.counts.inputs += 1;
        state.counts.max_ms = state.counts.max_ms.max(ms);
        let kinds: BTreeSet<Kind> = outcome.findings.iter().map(|f| f.kind).collect();
        for k in &kinds {
            *state.counts.by_kind.entry(k.name()).or_default() += 1;
        }
        let label = if let Some(k) = kinds.first() {
            k.name()
        } else if outcome.clean {
            state.counts.clean += 1;
            "clean"
        } else {
            state.counts.rejected += 1;
            "errors"
        };
        let _ = writeln!(outcomes, "{index} {label} {hash:016x} {ms}");
        for f in &outcome.findings {
            rec.record(f, state.seed, index, &input, &outcome.transcript);
        }
        if o.verbose {
            println!("{input}=> {label} ({ms} ms, {} errors)", outcome.errors);
            for f in &outcome.findings {
                println!("finding {}: {}", f.kind.name(), f.detail);
            }
            println!("{}", outcome.transcript);
        }
        state.running = None;
        state.next = index + 1;
        ran += 1;
    }
    state.save(&state_path);

    let c = &state.counts;
    let k = |kind: Kind| c.by_kind.get(kind.name()).copied().unwrap_or(0);
    println!(
        "fuzz: {} inputs (seed {}, {} s): {} panics, {} aborts, {} hangs, {} unlocated errors",
        c.inputs,
        state.seed,
        (now_ms().saturating_sub(c.started_ms) + 500) / 1000,
        k(Kind::Panic),
        k(Kind::Abort),
        k(Kind::Hang),
        k(Kind::Unlocated)
    );
    println!(
        "fuzz: also {} caught panics, {} slow inputs (> {} ms), {} misplaced locations; {} inputs rejected with located errors, {} clean; slowest {} ms; {base_note}",
        k(Kind::Caught),
        k(Kind::Slow),
        o.budget_ms,
        k(Kind::Misplaced),
        c.rejected,
        c.clean,
        c.max_ms
    );
    let findings: u64 = KINDS.iter().map(|&kind| k(kind)).sum();
    if findings > 0 {
        println!("fuzz: findings in {}", out.join("findings").display());
        std::process::exit(1);
    }
}
