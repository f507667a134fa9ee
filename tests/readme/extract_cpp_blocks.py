#!/usr/bin/env python3
"""Extracts every ```cpp block of a Markdown file into a C++ source, so that the README's
examples are compiled (and full programs run) by the test suite: tests/readme/CMakeLists.txt.

usage: extract_cpp_blocks.py README.md OUTDIR

Conventions (tests/readme/README.md says the same):
  * a block with `int main(` is a full program: compiled as it stands, linked, and run;
  * any other block is a fragment: compiled (not run) inside the scaffold of
    tests/readme/readme_scaffold.hpp. The fragment is cut into top-level pieces: class, struct,
    enum, using, template and free function definitions go to namespace scope; definitions of
    member functions marked `override` go into a class derived from esockets::Handler; every
    other statement goes into a function body. Names a fragment uses without declaring them
    (server, conn, c, handler, opts, ids, bytes, msg, id, pool) come from the scaffold;
  * a block right after the line `<!-- readme-test: skip -->` is not compiled.
Writes OUTDIR/block_NN.cpp (only when its text changed, so unchanged blocks are not rebuilt)
and OUTDIR/blocks.txt, one line per block: "NN program|fragment LINE".
"""
import os
import re
import sys

SKIP_MARK = "<!-- readme-test: skip -->"

# Names a fragment may use without declaring: (declaration as a function parameter,
# declaration as a member of the handler class or None).
SCAFFOLD_NAMES = {
    "server": ("esockets::Server& server", None),
    "conn": ("esockets::Connection& conn", None),
    "c": ("esockets::Connection& c", None),
    "handler": ("esockets::Handler& handler", None),
    "opts": ("esockets::ServerOptions& opts", None),
    "ids": ("std::vector<esockets::ConnectionId>& ids", None),
    "id": ("esockets::ConnectionId id", None),
    "bytes": ("esockets::Bytes bytes", None),
    "msg": ("esockets::Bytes msg", None),
    "pool": ("readme::Pool& pool", "readme::Pool pool;"),
}
NAMESPACE_SCOPE_WORDS = {"class", "struct", "union", "enum", "namespace", "template", "using",
                         "typedef", "extern", "static_assert", "inline", "constexpr"}
CONTROL_WORDS = {"if", "for", "while", "switch", "do", "else", "try", "return", "catch"}
NOT_TYPES = {"return", "throw", "case", "else", "delete", "new", "co_return", "co_yield", "goto",
             "sizeof", "not", "and", "or"}


def blocks(lines):
    """Yields (first_code_line_number, code_lines, skipped) for each ```cpp block."""
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```cpp\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        prev = i - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        skipped = prev >= 0 and lines[prev].strip() == SKIP_MARK
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        code = [l[indent:] if l[:indent].strip() == "" else l.lstrip() for l in lines[i + 1:j]]
        yield i + 2, code, skipped
        i = j + 1


def strip_comments(text):
    """The text with comments, string and character literals blanked (same length)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:j]))
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(ch + " " * (j - i - 2) + ch if j - i >= 2 else " " * (j - i))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def chunks(text):
    """Splits a fragment into top-level pieces: [(start offset, end offset)]."""
    code = strip_comments(text)
    result = []
    start = 0
    depth = 0  # braces, parentheses and brackets together
    i, n = 0, len(code)
    at_line_start = True
    while i < n:
        ch = code[i]
        if depth == 0 and ch == "#" and at_line_start and not code[start:i].strip():
            j = code.find("\n", i)
            j = n if j < 0 else j
            result.append((start, j))
            start = i = j
            continue
        if ch == "\n":
            at_line_start = True
        elif not ch.isspace():
            at_line_start = False
        if ch in "({[":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                rest = code[i + 1:]
                nxt = rest.lstrip()
                word = re.match(r"\w*", nxt).group(0)
                if not (nxt.startswith(";") or nxt.startswith(",") or nxt.startswith(")")
                        or word in ("else", "catch", "while")):
                    result.append((start, i + 1))
                    start = i + 1
        elif ch == ";" and depth == 0:
            result.append((start, i + 1))
            start = i + 1
        i += 1
    if code[start:].strip():
        result.append((start, n))
    return [(s, e) for s, e in result if code[s:e].strip()]


def classify(code):
    """'top' (preprocessor), 'namespace', 'member' or 'statement' for one chunk (comments blanked)."""
    body = code.strip()
    if body.startswith("#"):
        return "top"
    word = re.match(r"[A-Za-z_]\w*", body)
    word = word.group(0) if word else ""
    if word in NAMESPACE_SCOPE_WORDS:
        return "namespace"
    if body.endswith("}") and word not in CONTROL_WORDS:
        depth, head = 0, None
        for k, ch in enumerate(body):
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif ch == "{" and depth == 0:
                head = body[:k]
                break
        if head is not None and "=" not in re.sub(r"\([^()]*\)", "", head):
            m = re.search(r"\)\s*((?:const|noexcept|override|final|->\s*[\w:<>&*\s]+?|\s)*)$", head)
            if m:
                return "member" if "override" in m.group(1) else "namespace"
    return "statement"


def declares(code, name):
    """True if the code declares `name` (as a variable, parameter or capture)."""
    for m in re.finditer(r"([\w>]+)?(\s*[&*]+\s*|\s+)" + re.escape(name) + r"\s*[=;({:,)\[]", code):
        prev = m.group(1)
        if prev is None:
            if "&" in m.group(2) or "*" in m.group(2):
                before = code[:m.start()].rstrip()
                if before.endswith(("[", ",")):
                    return True  # a lambda capture: [&name = ...], [x, &name]
            continue
        if prev not in NOT_TYPES and not prev.isdigit():
            return True
    return False


def uses(code, name):
    return re.search(r"(?<![\w.>:])" + re.escape(name) + r"\b", code) is not None


def line_directive(readme, line):
    return '#line %d "%s"\n' % (line, readme)


def fragment_source(readme, first_line, text, number):
    code = strip_comments(text)
    parts = {"top": [], "namespace": [], "member": [], "statement": []}
    for s, e in chunks(text):
        while s < e and text[s].isspace():
            s += 1
        line = first_line + text.count("\n", 0, s)  # where the chunk's text starts
        kind = classify(code[s:e])
        parts[kind].append((line, text[s:e]))
    out = ["// Generated from %s (block %d, line %d) by tests/readme/extract_cpp_blocks.py: a fragment\n"
           % (readme, number, first_line),
           '#include "readme_scaffold.hpp"\n']
    for line, t in parts["top"]:
        out.append(line_directive(readme, line) + t + "\n")
    out.append("namespace readme_block_%d {\n" % number)
    for line, t in parts["namespace"]:
        out.append(line_directive(readme, line) + t + "\n")
    if parts["member"]:
        member_code = "".join(strip_comments(t) for _, t in parts["member"])
        out.append('#line %d "readme_scaffold (block %d)"\n' % (1, number))
        out.append("struct ReadmeHandler : esockets::Handler {\n")
        for name, (_, member) in SCAFFOLD_NAMES.items():
            if member and uses(member_code, name) and not declares(member_code, name):
                out.append("  " + member + "\n")
        for line, t in parts["member"]:
            out.append(line_directive(readme, line) + t + "\n")
        out.append("};\n")
    if parts["statement"]:
        stmt_code = "".join(strip_comments(t) for _, t in parts["statement"])
        params = [param for name, (param, _) in SCAFFOLD_NAMES.items()
                  if uses(stmt_code, name) and not declares(stmt_code, name)]
        out.append('#line %d "readme_scaffold (block %d)"\n' % (1, number))
        out.append("[[maybe_unused]] void statements(%s) {\n" %
                   ", ".join("[[maybe_unused]] " + p for p in params))
        for line, t in parts["statement"]:
            out.append(line_directive(readme, line) + t + "\n")
        out.append("}\n")
    out.append("}  // namespace readme_block_%d\n" % number)
    return "".join(out)


def write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def main():
    readme, outdir = os.path.abspath(sys.argv[1]), sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    with open(readme) as f:
        lines = f.read().split("\n")
    manifest = []
    number = 0
    for first_line, code, skipped in blocks(lines):
        if skipped:
            continue
        number += 1
        text = "\n".join(code) + "\n"
        if re.search(r"\bint\s+main\s*\(", strip_comments(text)):
            kind = "program"
            src = ("// Generated from %s (block %d) by tests/readme/extract_cpp_blocks.py: a program\n"
                   % (readme, number)) + line_directive(readme, first_line) + text
        else:
            kind = "fragment"
            src = fragment_source(readme, first_line, text, number)
        write_if_changed(os.path.join(outdir, "block_%02d.cpp" % number), src)
        manifest.append("%02d %s %d" % (number, kind, first_line))
    write_if_changed(os.path.join(outdir, "blocks.txt"), "\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
