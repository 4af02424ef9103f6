"""The one error envelope every API error must use."""
from __future__ import annotations

# Words that make a message actionable: it tells the caller what to send or do next.
ACTION_WORDS = ("send", "fix", "use", "retry", "check", "see", "split", "give", "encode", "leave", "must", "allowed")

def assert_error(resp, status: int, code: str | None = None) -> dict:
    """The one error envelope: {"error": {"status", "code", "message", ["details"]}}."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert 400 <= status < 500 or status == 503
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"status", "code", "message", "details"}
    assert err["status"] == status
    assert isinstance(err["code"], str) and err["code"]
    if code is not None:
        assert err["code"] == code
    assert isinstance(err["message"], str) and len(err["message"]) > 15
    assert any(w in err["message"].lower() for w in ACTION_WORDS), err["message"]
    if "details" in err:
        assert isinstance(err["details"], list) and err["details"]
        for d in err["details"]:
            assert set(d) == {"field", "problem"} and d["field"] and d["problem"]
    return err

