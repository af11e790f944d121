"""Rewrites the launch statements of a .cu file for the cuda-emu build (csrc/cuda_emu/cuda_emu.h).

`KERNEL<<<CONFIG>>>(ARGS);`, the kernel expression starting its line, becomes
`::emu::launch(::emu::LaunchCfg(CONFIG), [&] { KERNEL(ARGS); });` on the same lines (line numbers
kept, and a #line directive names the original file, so that sanitizer reports point into it).
Nothing else of the source changes. Usage: translate_launches.py SRC.cu OUT.cpp
"""
import re
import sys


def matching_paren(text, open_at):
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise SystemExit(f"translate_launches: unbalanced parentheses after offset {open_at}")


def translate(text):
    out, pos, launches = [], 0, 0
    for m in re.finditer(r"<<<(.*?)>>>\(", text, re.S):
        if m.start() < pos:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        indent = len(text[line_start:m.start()]) - len(text[line_start:m.start()].lstrip())
        kernel = text[line_start + indent:m.start()]
        close = matching_paren(text, m.end() - 1)
        if not re.match(r"\s*;", text[close + 1:]):
            raise SystemExit(f"translate_launches: a launch that is not a statement: {kernel}<<<...")
        out.append(text[pos:line_start + indent])
        out.append(f"::emu::launch(::emu::LaunchCfg({m.group(1)}), [&] {{ {kernel}(")
        out.append(text[m.end():close + 1] + "; })")
        pos = close + 1
        launches += 1
    out.append(text[pos:])
    return "".join(out), launches


def main(src, dst):
    with open(src) as f:
        text, launches = translate(f.read())
    if launches == 0:
        raise SystemExit(f"translate_launches: no kernel launch found in {src}")
    with open(dst, "w") as f:
        f.write(f'#line 1 "{src}"\n{text}')


if __name__ == "__main__":
    main(*sys.argv[1:])
