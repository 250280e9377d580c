#!/usr/bin/env python3
"""`ce-node mcp` driven by a real MCP client (the `mcp` package's stdio client) against a
cluster of real ce-node processes on 127.0.0.1 (the shape of topology/demo.yaml, on free
ports below 32768).

    python3 Tests/mcp/test_mcp.py [--ce-node .build/debug/ce-node] [--timeout 300]

Prints one line per check and "N passed, M failed"; exits 1 when a check fails or the run
exceeds its time. Every process it starts is stopped by its PID at the end.
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import AsyncExitStack

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

# mcp 2.x marks resources/subscribe deprecated (a later protocol revision drops it); the
# server under test speaks a revision that has it, and this test checks it.
warnings.filterwarnings("ignore", message=".*resources/subscribe.*")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Failure(Exception):
    pass


def field(obj, snake, camel):
    """A result field under its name in mcp 2.x (snake_case) or 1.x (camelCase)."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def free_port(taken):
    """A TCP port on 127.0.0.1 below the ephemeral range that nothing listens on now."""
    for _ in range(500):
        port = random.randint(20000, 31999)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise Failure("no free port in 20000-31999")


def topology(root):
    taken = set()

    def ports():
        return "{ pub: %d, rep: %d, replay: %d }" % (free_port(taken), free_port(taken), free_port(taken))

    nodes = ""
    for name, pool, workspace in [("planner-1", "planner", False), ("builder-1", "builder", False),
                                  ("builder-2", "builder", False), ("reviewer-1", "reviewer", True)]:
        nodes += f"  - name: {name}\n    pool: {pool}\n    host: 127.0.0.1\n    ports: {ports()}\n    data: {root}/{name}\n"
        if workspace:
            nodes += f"    workspace: {root}/ws-{name}\n"
    return f"""version: 1
cluster: mcp-test
settings:
  heartbeat_ms: 200
  ask_timeout_ms: 2000
  ask_retries: 1
  max_message_bytes: 65536
coordinator:
  name: coordinator
  host: 127.0.0.1
  ports: {ports()}
  data: {root}/coordinator
nodes:
{nodes}pools:
  planner:
    subscribe: [build_ready, implementation_complete, review_complete, conflict_detected,
                resolution_needed, sync_point_reached, early_feedback]
  builder:
    subscribe: [plan_ready, schema_v1, architecture_complete, requirements_defined,
                review_complete, resolution_needed, sync_point_reached, early_feedback]
  reviewer:
    subscribe: all
gates:
  - name: architecture_approval
    pools: [planner, builder, reviewer]
    require_events: [architecture_complete]
    subject: architecture
  - name: release_readiness
    pools: [builder, reviewer]
conflicts:
  resolvers: [planner, human]
  escalate_after_s: 60
"""


class Cluster:
    def __init__(self, binary, root):
        self.binary = binary
        self.root = root
        self.topology = os.path.join(root, "topology.yaml")
        # CURVE, as every cluster: each node's secret key in its data folder, the public keys
        # in the keys file the topology names.
        lines = []
        for name in ["coordinator", "planner-1", "builder-1", "builder-2", "reviewer-1"]:
            made = subprocess.run([binary, "keys", "generate", "--node", name, "--data", os.path.join(root, name)],
                                  capture_output=True, text=True, timeout=30)
            if made.returncode != 0:
                raise Failure(f"ce-node keys generate --node {name} failed: {made.stderr}")
            lines.append(made.stdout.strip())
        with open(os.path.join(root, "keys.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.topology, "w") as f:
            f.write(topology(root).replace("settings:\n", "settings:\n  keys_file: keys.yaml\n", 1))
        self.processes = {}

    def start(self, name):
        log = open(os.path.join(self.root, name + ".log"), "ab")
        self.processes[name] = subprocess.Popen(
            [self.binary, "run", "--topology", self.topology, "--node", name, "--log-level", "info"],
            stdout=log, stderr=log, cwd=self.root)

    def cli(self, *args, timeout=20):
        return subprocess.run([self.binary, *args, "--topology", self.topology], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    async def wait_up(self, names, seconds=30):
        deadline = time.monotonic() + seconds
        for name in names:
            while True:
                if self.processes[name].poll() is not None:
                    raise Failure(f"{name} exited:\n{self.log(name)}")
                if self.cli("status", "--node", name, timeout=10).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise Failure(f"{name} does not answer on its control endpoint")
                await asyncio.sleep(0.05)
        # Until every node hears every other started node.
        while True:
            ok = True
            for name in names:
                status = json.loads(self.cli("status", "--json", "--node", name).stdout)
                ok = ok and all(p["up"] for p in status["peers"] if p["name"] in names)
            if ok:
                return
            if time.monotonic() > deadline:
                raise Failure("the nodes do not hear each other")
            await asyncio.sleep(0.05)

    def stop(self, name, sig=signal.SIGTERM):
        p = self.processes.get(name)
        if p and p.poll() is None:
            os.kill(p.pid, sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def tear_down(self):
        for name in list(self.processes):
            self.stop(name)

    def log(self, name):
        try:
            with open(os.path.join(self.root, name + ".log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""


class Agent:
    """One MCP client session with `ce-node mcp --node NAME`; records resource notifications."""

    def __init__(self, name):
        self.name = name
        self.updates = []
        self.session = None

    async def handle(self, message):
        note = getattr(message, "root", message)
        if isinstance(note, types.ResourceUpdatedNotification):
            self.updates.append(str(note.params.uri))

    async def open(self, stack, cluster):
        params = StdioServerParameters(
            command=cluster.binary, args=["mcp", "--topology", cluster.topology, "--node", self.name], cwd=cluster.root)
        errlog = open(os.path.join(cluster.root, f"mcp-{self.name}.log"), "w")
        stack.callback(errlog.close)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        self.session = await stack.enter_async_context(ClientSession(read, write, message_handler=self.handle))
        await self.session.initialize()
        return self

    async def call(self, tool, **arguments):
        """The tool's JSON result; a tool error raises Failure."""
        result = await self.session.call_tool(tool, arguments)
        text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        if field(result, "is_error", "isError"):
            raise Failure(f"{self.name} {tool} failed: {text}")
        return json.loads(text)

    async def error(self, tool, expected, **arguments):
        """Calls a tool that must fail; returns its error text, which must contain `expected`."""
        result = await self.session.call_tool(tool, arguments)
        text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        if not field(result, "is_error", "isError"):
            raise Failure(f"{self.name} {tool}({arguments}) should have failed, got {text}")
        if expected not in text:
            raise Failure(f"{self.name} {tool} error {text!r} does not say {expected!r}")
        return text


async def eventually(seconds, what, condition):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise Failure(f"timed out after {seconds} s: {what}")


async def receive(agent, types_, after, want, seconds=15):
    """Events of `types_` after a cursor until `want` of them arrived; returns (events, cursor)."""
    got, cursor = [], after
    deadline = time.monotonic() + seconds
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"{agent.name} received {len(got)} of {want} {types_} events")
        reply = await agent.call("wait_for_events", types=types_, after=cursor, timeout_s=max(0.1, min(left, 5)))
        got += reply["events"]
        cursor = reply["next_cursor"]
    return got, cursor


# --- the checks -----------------------------------------------------------------------------

async def check_tools_and_resources(c, a):
    tools = (await a["planner"].session.list_tools()).tools
    names = sorted(t.name for t in tools)
    expected = sorted(["emit", "wait_for_events", "history", "ask", "pending_questions", "answer", "report_sync_point",
                       "gates", "report_conflict", "conflicts", "resolve", "status"])
    if names != expected:
        raise Failure(f"tools {names}, expected {expected}")
    for t in tools:
        if not t.description or field(t, "input_schema", "inputSchema").get("type") != "object":
            raise Failure(f"tool {t.name} lacks a description or an object schema")
    uris = sorted(str(r.uri) for r in (await a["planner"].session.list_resources()).resources)
    if uris != ["ce://catalog", "ce://events", "ce://questions", "ce://topology"]:
        raise Failure(f"resources {uris}")
    catalog = json.loads((await a["planner"].session.read_resource("ce://catalog")).contents[0].text)
    if "plan_ready" not in catalog["standard"]["planning"] or "schema_v1" not in catalog["topology_types"]:
        raise Failure(f"catalog {catalog}")
    topo = json.loads((await a["builder"].session.read_resource("ce://topology")).contents[0].text)
    if topo["this_node"] != "builder-1" or [g["name"] for g in topo["gates"]] != ["architecture_approval", "release_readiness"]:
        raise Failure(f"topology {topo}")


async def check_emit_and_wait(c, a):
    planner, builder = a["planner"], a["builder"]
    start = (await builder.call("wait_for_events", after="now", timeout_s=0.2))["next_cursor"]
    sent = await planner.call("emit", event_type="plan_ready", payload={"feature": "login"}, target="builder")
    if not sent.get("durable") or not sent.get("id") or not isinstance(sent.get("seq"), int):
        raise Failure(f"emit returned {sent}")
    got, cursor = await receive(builder, ["plan_ready"], start, 1)
    if got[0]["id"] != sent["id"] or got[0]["payload"] != {"feature": "login"} or got[0]["origin"] != "planner-1":
        raise Failure(f"builder received {got[0]}, planner sent {sent}")
    # Nothing twice: the cursor is past it.
    again = await builder.call("wait_for_events", types=["plan_ready"], after=cursor, timeout_s=0.5)
    if again["events"] or not again["timed_out"]:
        raise Failure(f"a second call after the cursor returned {again}")
    # The batch form: three events, consecutive sequences, received in order.
    batch = await planner.call("emit", events=[{"event_type": "plan_ready", "payload": {"n": n}} for n in range(3)])
    seqs = [e["seq"] for e in batch["events"]]
    if seqs != list(range(seqs[0], seqs[0] + 3)):
        raise Failure(f"batch sequences {seqs}")
    got, _ = await receive(builder, ["plan_ready"], cursor, 3)
    if [e["payload"]["n"] for e in got] != [0, 1, 2]:
        raise Failure(f"batch received as {[e['payload'] for e in got]}")
    # A long poll that starts before the event is emitted returns it.
    waiting = asyncio.ensure_future(builder.call("wait_for_events", types=["schema_v1"], after="now", timeout_s=20))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await planner.call("emit", event_type="schema_v1", payload={"v": 1})
    reply = await asyncio.wait_for(waiting, 25)
    if [e["event_type"] for e in reply["events"]] != ["schema_v1"] or time.monotonic() - started > 5:
        raise Failure(f"long poll returned {reply} after {time.monotonic() - started:.1f} s")


async def check_notifications(c, a):
    builder, planner = a["builder"], a["planner"]
    await builder.session.subscribe_resource("ce://events/plan_ready")
    builder.updates.clear()
    await planner.call("emit", event_type="plan_ready", payload={"feature": "search"})

    async def notified():
        return "ce://events/plan_ready" in builder.updates
    await eventually(10, "builder is notified of plan_ready", notified)
    latest = json.loads((await builder.session.read_resource("ce://events/plan_ready")).contents[0].text)["events"]
    if latest[-1]["payload"] != {"feature": "search"}:
        raise Failure(f"ce://events/plan_ready ends with {latest[-1]}")
    # An event type not subscribed to gives no notification for it.
    cursor = (await builder.call("wait_for_events", after="now", timeout_s=0.1))["next_cursor"]
    builder.updates.clear()
    await planner.call("emit", event_type="early_feedback", payload={})
    await receive(builder, ["early_feedback"], cursor, 1)
    if "ce://events/plan_ready" in builder.updates:
        raise Failure("notified of plan_ready for an early_feedback event")


async def check_ask_answer(c, a):
    builder, planner = a["builder"], a["planner"]
    await planner.session.subscribe_resource("ce://questions")
    planner.updates.clear()
    asking = asyncio.ensure_future(builder.call("ask", pool="planner", question={"q": "cookie or token?"}, timeout_s=20))
    pending = await planner.call("pending_questions", timeout_s=15)
    if pending["count"] != 1 or pending["questions"][0]["question"] != {"q": "cookie or token?"} \
            or pending["questions"][0]["from_pool"] != "builder":
        raise Failure(f"pending questions {pending}")
    rid = pending["questions"][0]["request_id"]

    async def notified():
        return "ce://questions" in planner.updates
    await eventually(10, "planner is notified of the question", notified)
    await planner.call("answer", request_id=rid, answer={"use": "token"})
    answer = await asyncio.wait_for(asking, 25)
    if answer != {"pool": "planner", "answer": {"use": "token"}}:
        raise Failure(f"builder got {answer}")
    await planner.error("answer", "already answered", request_id=rid, answer="again")
    if (await planner.call("pending_questions"))["count"] != 0:
        raise Failure("the answered question is still pending")
    status = await planner.call("status")
    if status["counters"]["questions_answered"] != 1:
        raise Failure(f"planner counters {status['counters']}")


async def check_ask_workspace_node(c, a):
    """A node with a workspace: the question is also a request file; answered over MCP, the file goes."""
    builder, reviewer = a["builder"], a["reviewer"]
    requests = os.path.join(c.root, "ws-reviewer-1", ".ce-events", "requests")
    asking = asyncio.ensure_future(builder.call("ask", pool="reviewer", question="more tests?", timeout_s=20))
    pending = await reviewer.call("pending_questions", timeout_s=15)
    rid = pending["questions"][0]["request_id"]

    async def filed():
        return os.path.exists(os.path.join(requests, rid + ".json"))
    await eventually(10, "the request file is written", filed)
    await reviewer.call("answer", request_id=rid, answer="yes, for expiry")
    answer = await asyncio.wait_for(asking, 25)
    if answer["answer"] != "yes, for expiry":
        raise Failure(f"builder got {answer}")

    async def withdrawn():
        return not os.path.exists(os.path.join(requests, rid + ".json"))
    await eventually(10, "the request file is removed once answered", withdrawn)


async def check_gate(c, a):
    planner, builder, reviewer = a["planner"], a["builder"], a["reviewer"]
    start = (await builder.call("wait_for_events", after="now", timeout_s=0.1))["next_cursor"]
    await planner.call("emit", event_type="architecture_complete", payload={"doc": "arch.md"})
    for agent in (planner, builder, reviewer):
        sent = await agent.call("report_sync_point", gate="architecture_approval")
        if sent.get("gate") != "architecture_approval" or "seq" not in sent:
            raise Failure(f"report_sync_point returned {sent}")
    got, _ = await receive(builder, ["gate_passed"], start, 1, seconds=20)
    if got[0]["payload"]["gate"] != "architecture_approval" or got[0]["origin"] != "coordinator":
        raise Failure(f"gate_passed {got[0]}")
    gates = (await reviewer.call("gates"))["gates"]
    arch = [g for g in gates if g["gate"] == "architecture_approval"][0]
    if arch["round"] != 2 or arch["aligned"] != []:
        raise Failure(f"after passing, the gate is {arch}")
    await planner.error("report_sync_point", "not for planner", gate="release_readiness")
    await planner.error("report_sync_point", "no gate \"nightly\"", gate="nightly")


async def check_conflict(c, a):
    planner, builder, reviewer = a["planner"], a["builder"], a["reviewer"]
    start = (await planner.call("wait_for_events", after="now", timeout_s=0.1))["next_cursor"]
    reported = await reviewer.call("report_conflict", subject="token-expiry", parties=["builder"],
                                   description="no test covers token expiry")
    cid = reported["conflict_id"]
    asked, _ = await receive(planner, ["resolution_needed"], start, 1, seconds=20)
    if asked[0]["payload"]["conflict_id"] != cid or asked[0]["target"] != "planner":
        raise Failure(f"resolution_needed {asked[0]} for conflict {cid}")

    async def listed():
        return any(x["conflict_id"] == cid for x in (await builder.call("conflicts"))["conflicts"])
    await eventually(10, "the conflict is listed", listed)
    b_start = (await builder.call("wait_for_events", after="now", timeout_s=0.1))["next_cursor"]
    await planner.call("resolve", conflict_id=cid, decision="add an expiry test")
    closed, _ = await receive(builder, ["conflict_closed"], b_start, 1, seconds=20)
    if closed[-1]["payload"]["decision"] != "add an expiry test" or closed[-1]["payload"]["conflict_id"] != cid:
        raise Failure(f"conflict_closed {closed[-1]}")
    await planner.error("resolve", "no open conflict", conflict_id=cid, decision="again")


async def check_bad_arguments(c, a):
    b = a["builder"]
    await b.error("emit", "unknown event type \"bild_ready\"", event_type="bild_ready")
    await b.error("emit", "may only contain a-z", event_type="Build-Ready")
    await b.error("emit", "missing argument \"event_type\"", payload={"x": 1})
    await b.error("emit", "unknown argument \"paylod\"", event_type="build_ready", paylod=1)
    await b.error("emit", "must be true or false", event_type="build_ready", allow_custom_type="yes")
    await b.error("emit", "target \"deploy\" is not a pool", event_type="build_ready", target="deploy")
    await b.error("emit", "more than the cluster's limit of 65536 bytes", event_type="build_ready", payload="x" * 70000)
    await b.error("emit", "events[1]: unknown event type", events=[{"event_type": "build_ready"}, {"event_type": "nope_type"}])
    await b.error("wait_for_events", "must be an integer", max_count="ten")
    await b.error("wait_for_events", "more than 0 seconds", timeout_s=0)
    await b.error("wait_for_events", "at most 600 seconds", timeout_s=601)
    await b.error("ask", "no pool \"deployers\"", pool="deployers", question="?")
    await b.error("ask", "missing argument \"question\"", pool="planner")
    await b.error("answer", "no question nope waits", request_id="nope", answer=1)
    await b.error("resolve", "no open conflict", conflict_id="nope", decision="x")
    await b.error("history", "give origin too", after_seq=3)
    await b.error("launch_rockets", "unknown tool")
    custom = await b.call("emit", event_type="lint_report", payload={"ok": True}, allow_custom_type=True)
    if "seq" not in custom:
        raise Failure(f"a custom type with allow_custom_type: {custom}")
    if (await b.call("status"))["node"] != "builder-1":
        raise Failure("the server does not answer after bad calls")


async def check_node_not_running(c, a):
    """builder-2's MCP server started before its node: clear errors, then a node stopping mid-call."""
    b2 = a["builder2"]
    await b2.error("emit", "node builder-2 is not running", event_type="build_ready")
    await b2.error("status", "not running")
    c.start("builder-2")
    await c.wait_up(["builder-2"])
    if (await b2.call("status"))["node"] != "builder-2":
        raise Failure("status after the node started")
    waiting = asyncio.ensure_future(b2.session.call_tool("wait_for_events", {"types": ["integration_done"], "after": "now", "timeout_s": 60}))
    await asyncio.sleep(0.5)
    killed = time.monotonic()
    c.stop("builder-2", signal.SIGKILL)
    result = await asyncio.wait_for(waiting, 20)
    text = "".join(x.text for x in result.content)
    if not field(result, "is_error", "isError") or "stopped" not in text or time.monotonic() - killed > 5:
        raise Failure(f"a node killed mid-call gave {text!r} after {time.monotonic() - killed:.1f} s")
    await b2.error("emit", "not running", event_type="build_ready")
    if len((await b2.session.list_tools()).tools) != 12:
        raise Failure("the server does not answer after its node died")


async def check_scripted_session(c, a):
    """A client that writes its requests and closes stdin at once gets every reply, and the
    server then exits by itself."""
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "script", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "wait_for_events", "arguments": {"after": "now", "timeout_s": 1}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "emit", "arguments": {"event_type": "nope"}}},
    ]
    process = await asyncio.create_subprocess_exec(
        c.binary, "mcp", "--topology", c.topology, "--node", "builder-1", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=c.root)
    try:
        out, _ = await asyncio.wait_for(process.communicate("".join(json.dumps(x) + "\n" for x in lines).encode()), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    replies = {r["id"]: r for r in map(json.loads, out.decode().splitlines())}
    if sorted(replies) != [1, 2, 3] or process.returncode != 0:
        raise Failure(f"replies {sorted(replies)}, exit status {process.returncode}")
    if replies[2]["result"]["structuredContent"]["timed_out"] is not True or replies[3]["result"]["isError"] is not True:
        raise Failure(f"replies {replies}")


async def main(args):
    binary = os.path.abspath(args.ce_node)
    root = tempfile.mkdtemp(prefix="ce-mcp-", dir="/tmp")
    cluster = Cluster(binary, root)
    passed, failed = 0, 0
    try:
        for name in ["coordinator", "planner-1", "builder-1", "reviewer-1"]:
            cluster.start(name)
        await cluster.wait_up(["coordinator", "planner-1", "builder-1", "reviewer-1"])
        async with AsyncExitStack() as stack:
            agents = {}
            for key, node in [("planner", "planner-1"), ("builder", "builder-1"), ("reviewer", "reviewer-1"),
                              ("builder2", "builder-2")]:
                agents[key] = await Agent(node).open(stack, cluster)
            for check in [check_tools_and_resources, check_emit_and_wait, check_notifications, check_ask_answer,
                          check_ask_workspace_node, check_gate, check_conflict, check_bad_arguments,
                          check_node_not_running, check_scripted_session]:
                started = time.monotonic()
                try:
                    await asyncio.wait_for(check(cluster, agents), 90)
                    passed += 1
                    print(f"PASS {check.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
                except Exception as error:  # noqa: BLE001 - a failed check is reported, the rest still run
                    failed += 1
                    print(f"FAIL {check.__name__}: {type(error).__name__}: {error}", flush=True)
    except Exception as error:  # noqa: BLE001
        failed += 1
        print(f"FAIL setup: {type(error).__name__}: {error}", flush=True)
    finally:
        cluster.tear_down()
        # The MCP servers are children of this process (the stdio client starts them and ends
        # them when its session closes); any still alive is stopped by its PID.
        for pid in children():
            print(f"stopping process {pid}, still running after its session closed", flush=True)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if failed:
            for name in cluster.processes:
                print(f"--- {name} log (last lines)\n{cluster.log(name)}")
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return passed, failed


def children():
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ce-node", default=os.path.join(ROOT, ".build", "debug", "ce-node"))
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the whole run")
    options = parser.parse_args()
    try:
        passed, failed = asyncio.run(asyncio.wait_for(main(options), options.timeout))
    except asyncio.TimeoutError:
        passed, failed = 0, 1
        print(f"FAIL: the run took more than {options.timeout} s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
