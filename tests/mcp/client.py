"""Drives AxonTask's MCP endpoint with the official Python SDK, as an agent would.

Usage: client.py MCP_URL API_KEY HTTP_BASE MODE   (MODE: legacy | auto)

Lists the tools; starts a shell task and streams it with stream_task (progress callbacks);
resumes from a seq; cancels a `sleep 60` (its process must be gone within 2 s); runs
run_task as one plain call and, in auto mode, as a task through the tasks extension
(tasks/get to completed, tasks/cancel to cancelled). Every event received must equal the
HTTP API's events for that task, chain included. Prints one line per check; exits 1 on
the first failure.
"""

import asyncio
import json
import os
import sys
import time
import urllib.request
from typing import Any, Literal

import httpx2
import mcp_types
from pydantic import Field, TypeAdapter

from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TASKS = "io.modelcontextprotocol/tasks"
TOOLS = {"start_task", "get_task_status", "stream_task", "resume_task", "cancel_task",
         "list_tasks", "verify_task", "run_task"}


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        sys.exit(1)


class CreateTask(mcp_types.Result):
    """The CreateTaskResult of SEP-2663: a flat task object."""

    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str


class Tasks(ClientExtension):
    """Declares the tasks extension and claims its result shape (this test polls itself)."""

    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        async def unused(result: CreateTask, ctx: ClaimContext) -> mcp_types.CallToolResult:
            raise AssertionError("the test resolves tasks itself")

        return [ResultClaim(result_type="task", model=CreateTask, resolve=unused)]


class TaskRequest(mcp_types.Request[dict, str]):
    """tasks/get or tasks/cancel, with Mcp-Name: <taskId> (SEP-2663)."""

    name_param = "taskId"


class Api:
    def __init__(self, base: str, key: str):
        self.base, self.key = base, key

    def events(self, task: str) -> list[dict]:
        request = urllib.request.Request(
            f"{self.base}/mcp/tasks/{task}/events?limit=1000", headers={"X-Api-Key": self.key})
        with urllib.request.urlopen(request) as response:
            return json.load(response)["events"]


def connect(url: str, key: str, mode: str, extensions=None) -> Client:
    http = create_mcp_http_client(headers={"X-Api-Key": key})
    return Client(streamable_http_client(url, http_client=http), mode=mode,
                  extensions=extensions, cache=None)


async def stream_all(client: Client, task: str, since: int = 0) -> tuple[list[dict], list[str]]:
    """stream_task from `since` until done; returns the events and the progress messages."""
    events: list[dict] = []
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    while True:
        result = await client.call_tool(
            "stream_task", {"task_id": task, "since_seq": since, "wait_s": 10},
            progress_callback=on_progress)
        if result.is_error:
            check(False, f"stream_task from seq {since}: {result.content}")
        batch = result.structured_content
        events += batch["events"]
        since = batch["next_seq"]
        if batch["done"]:
            return events, messages


async def wait_state(client: Client, task: str, state: str) -> None:
    for _ in range(300):
        status = (await client.call_tool("get_task_status", {"task_id": task})).structured_content
        if status["state"] == state:
            return
        await asyncio.sleep(0.05)
    check(False, f"task {task} reached {state}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too
            return stat.read().split(") ")[-1].startswith("Z")
    except OSError:  # it ended between the two looks (ENOENT, or ESRCH on the read)
        return True


async def main(url: str, key: str, base: str, mode: str) -> None:
    api = Api(base, key)
    async with connect(url, key, mode) as client:
        wanted = {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
        check(client.protocol_version == wanted, f"[{mode}] speaks protocol {client.protocol_version}")
        tools = {tool.name for tool in (await client.list_tools()).tools}
        check(TOOLS <= tools, f"[{mode}] tools/list has the eight tools")

        started = await client.call_tool("start_task", {
            "name": "py-stream", "adapter": "shell",
            "args": {"command": "sleep 0.5; for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done"}})
        check(not started.is_error, f"[{mode}] start_task")
        task = started.structured_content["task_id"]
        events, messages = await stream_all(client, task)
        check([e["seq"] for e in events] == list(range(1, len(events) + 1)),
              f"[{mode}] stream_task returns every seq once, in order")
        check(events == api.events(task), f"[{mode}] streamed events equal the HTTP API's, chain included")
        check(any(m.startswith("stdout: line") for m in messages),
              f"[{mode}] progress callbacks carry output lines ({len(messages)} received)")

        resumed = await client.call_tool("resume_task", {"task_id": task, "last_seq": 3})
        check(resumed.structured_content["events"] == api.events(task)[3:],
              f"[{mode}] resume_task from seq 3 returns the rest")

        sleeper = (await client.call_tool("start_task", {
            "name": "py-sleep", "adapter": "shell",
            "args": {"command": "echo pid $$; exec sleep 60"}})).structured_content["task_id"]
        pid = None
        since = 0
        while pid is None:
            batch = (await client.call_tool(
                "stream_task", {"task_id": sleeper, "since_seq": since, "wait_s": 10})).structured_content
            since = batch["next_seq"]
            for event in batch["events"]:
                if event["kind"] == "stdout" and event["payload"]["line"].startswith("pid "):
                    pid = int(event["payload"]["line"].split()[1])
        canceled_at = time.monotonic()
        cancel = await client.call_tool("cancel_task", {"task_id": sleeper})
        check(cancel.structured_content == {"canceled": True}, f"[{mode}] cancel_task answers canceled")
        while not gone(pid) and time.monotonic() - canceled_at < 2:
            await asyncio.sleep(0.02)
        check(gone(pid), f"[{mode}] the canceled task's process is gone within 2 s")
        await wait_state(client, sleeper, "canceled")

        run_messages: list[str] = []

        async def on_run_progress(progress: float, total: float | None, message: str | None) -> None:
            run_messages.append(message or "")

        ran = await client.call_tool("run_task", {
            "name": "py-run", "adapter": "mock", "args": {"steps": 3, "interval_ms": 100}},
            progress_callback=on_run_progress)
        check(not ran.is_error and ran.structured_content["state"] == "succeeded",
              f"[{mode}] run_task as one call ends succeeded")
        run_id = ran.structured_content["task_id"]
        check(bool(run_messages) and run_id in run_messages[0] and "resume_task" in run_messages[0],
              f"[{mode}] run_task's first progress message names the task and resume_task")
        # Steps are reported; the last may share a notification with the end (it follows at once).
        check(any("/3 (" in m for m in run_messages),
              f"[{mode}] run_task reports the task's progress ({run_messages})")

    if mode != "auto":
        return
    async with connect(url, key, mode, extensions=[Tasks()]) as client:
        async def task_request(method: str, task_id: str) -> dict:
            request = TaskRequest(method=method, params={"taskId": task_id})
            return await client.session.send_request(request, TypeAdapter(dict[str, Any]))

        async def settle(task_id: str, wanted: str) -> dict:
            for _ in range(300):
                got = await task_request("tasks/get", task_id)
                if got["status"] == wanted:
                    return got
                if got["status"] != "working":
                    check(False, f"tasks/get says working until {wanted}, not {got['status']}")
                await asyncio.sleep(0.05)
            check(False, f"task {task_id} became {wanted}")

        created = await client.session.call_tool(
            "run_task", {"name": "py-task", "adapter": "mock", "args": {"steps": 3, "interval_ms": 50}},
            allow_claimed=True)
        check(isinstance(created, CreateTask) and created.status == "working",
              "[tasks] run_task answers a CreateTaskResult at once")
        done = await settle(created.task_id, "completed")
        check(done["result"]["isError"] is False, "[tasks] tasks/get reaches completed with the result")
        check(done["result"]["structuredContent"]["state"] == "succeeded",
              "[tasks] the completed result is the task's outcome")
        check(api.events(created.task_id)[-1]["kind"] == "succeeded",
              "[tasks] the MCP task id is the AxonTask task id")

        second = await client.session.call_tool(
            "run_task", {"name": "py-task-cancel", "adapter": "shell", "args": {"command": "sleep 60"}},
            allow_claimed=True)
        await task_request("tasks/cancel", second.task_id)
        await settle(second.task_id, "cancelled")
        check(api.events(second.task_id)[-1]["kind"] == "canceled",
              "[tasks] tasks/cancel ends the task canceled")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
