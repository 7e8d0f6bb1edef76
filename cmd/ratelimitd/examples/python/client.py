#!/usr/bin/env python3
"""A ratelimitd client in Python with only the standard library (urllib).

It reserves the most tokens an LLM call may use, does the work, and refunds
what was not used, naming the check it refunds by its decided_at_us:

    python3 client.py http://127.0.0.1:8080

The REST API: POST /v1/check, /v1/peek, /v1/refund, /v1/reset with
{"domain": ..., "descriptors": [{"entries": [{"key": ..., "value": ...}],
"cost": N}], "cost": N}; /v1/refund also takes "decided_at_us".
"""

import json
import sys
import urllib.error
import urllib.request


class RateLimited(Exception):
    """The check was over the limit; retry_after_ms says when to retry."""

    def __init__(self, answer):
        super().__init__("over the limit, retry in %d ms" % answer["retry_after_ms"])
        self.answer = answer


class Client:
    def __init__(self, base_url, domain, timeout=2.0):
        self.base_url = base_url.rstrip("/")
        self.domain = domain
        self.timeout = timeout

    def _post(self, path, body):
        req = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, json.load(resp)
        except urllib.error.HTTPError as err:
            # 429 is an answer, not a failure: its body is the decision.
            if err.code == 429:
                return err.code, err.headers, json.load(err)
            raise

    def _body(self, descriptors, cost=None, **extra):
        body = {"domain": self.domain, "descriptors": [
            {"entries": [{"key": k, "value": v} for k, v in d.items()]} for d in descriptors]}
        if cost is not None:
            body["cost"] = cost
        body.update(extra)
        return body

    def check(self, descriptors, cost=1):
        """Charge cost on every descriptor, all or nothing; raise RateLimited when over."""
        status, headers, answer = self._post("/v1/check", self._body(descriptors, cost))
        if status == 429:
            raise RateLimited(answer)
        return answer, headers

    def peek(self, descriptors):
        return self._post("/v1/peek", self._body(descriptors))[2]

    def refund(self, descriptors, amount, decided_at_us):
        return self._post("/v1/refund", self._body(descriptors, amount, decided_at_us=decided_at_us))[2]

    def reset(self, descriptors):
        return self._post("/v1/reset", self._body(descriptors))[2]


def main(base_url):
    client = Client(base_url, "llm")
    user = [{"user": "alice"}]
    client.reset(user)
    answer, headers = client.check(user, cost=800)  # reserve max_tokens
    print("reserved 800: remaining", answer["descriptors"][0]["remaining"])
    print("RateLimit:", headers.get("RateLimit"))
    used = 300  # the model used fewer tokens than reserved
    back = client.refund(user, 800 - used, answer["decided_at_us"])
    print("refunded 500: remaining", back["descriptors"][0]["remaining"])
    try:
        client.check(user, cost=600)
        print("reserved 600 more")
        client.check(user, cost=600)
    except RateLimited as over:
        print("over the limit: retry after", over.answer["retry_after_ms"] // 1000, "s")
    print("peek: remaining", client.peek(user)["descriptors"][0]["remaining"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
