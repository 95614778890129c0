"""Every Rust snippet the docs show outside the README's quick start is a
doctest CI compiles: the block after `<!-- compiled: PATH -->` in README.md
or docs/*.md must be one of PATH's doc examples, less its hidden `# ` lines.
Usage: python3 .ci/doc-snippets.py [ROOT]"""

import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")


def doc_examples(path):
    """The code blocks of PATH's `//!` and `///` comments, hidden lines removed."""
    lines = []
    for line in (root / path).read_text().splitlines():
        line = line.strip()
        if line.startswith("//!") or line.startswith("///"):
            text = line[3:]
            lines.append(text[1:] if text.startswith(" ") else text)
    examples, current = [], None
    for line in lines:
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                examples.append("\n".join(current) + "\n")
                current = None
        elif current is not None and not (line == "#" or line.startswith("# ")):
            current.append(line)
    return examples


found = 0
for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
    for path, block in re.findall(r"<!-- compiled: (\S+) -->\s*```rust\n(.*?)```", doc.read_text(), re.S):
        found += 1
        if block not in doc_examples(path):
            sys.exit(f"{doc.name}: the snippet marked as compiled from {path} is not one of its doc examples")
if found == 0:
    sys.exit("no snippet is marked <!-- compiled: PATH -->: the check would prove nothing")
print(f"{found} documented snippets are compiled doc examples")
