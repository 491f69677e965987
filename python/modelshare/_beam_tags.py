"""What Beam's integrations share: how a Beam tag becomes a modelshare tag and identity."""
import hashlib
import re

_TAG_OK = re.compile(r"^[A-Za-z0-9._:/@+-]{1,128}$")


def _tag(tag):
    """Beam tags are any string; modelshare's are [A-Za-z0-9._:/@+-]{1,128}. A tag that does not
    fit is mapped to one that does, the same in every process."""
    text = str(tag)
    if _TAG_OK.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9._:/@+-]", "-", text)[:100] + "-" + digest


def _tag_key(tag, strict, key):
    """The identity under which Beam's integrations share: the tag, as in Beam, unless strict
    (the constructor's fingerprint, as modelshare.Shared) or a key of the user's."""
    if key is not None or strict:
        return key
    return f"modelshare.beam tag {tag}"[:256]
