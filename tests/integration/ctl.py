"""ctl.py - a client of vdiskd's control socket for the integration tests
(docs/CONTROL-API.md): one command at a time; events that arrive are kept
in .events and can be waited for."""
import json
import socket


class Ctl:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.greeting = json.loads(self.f.readline())
        self.events = []

    def _next(self):
        line = self.f.readline()
        if not line:
            raise EOFError("the daemon closed the control socket")
        return json.loads(line)

    def cmd(self, command, **args):
        """Runs command; returns the whole reply ({"return": ...} or
        {"error": ...})."""
        self.f.write((json.dumps({"execute": command, "arguments": args}) + "\n").encode())
        self.f.flush()
        while True:
            m = self._next()
            if "event" in m:
                self.events.append(m)
                continue
            return m

    def wait_event(self, names, job=None, timeout=120):
        """The first event named in names (of job id job, if given)."""
        def match(e):
            return e["event"] in names and (job is None or e["data"].get("id") == job)
        for e in self.events:
            if match(e):
                return e
        self.s.settimeout(timeout)
        while True:
            m = self._next()
            if "event" in m:
                self.events.append(m)
                if match(m):
                    return m
