"""Flag documents that carry instruction-like text aimed at a language model (prompt injection).

Anything indexed can reach an LLM prompt verbatim. Prompts fence and quote sources as untrusted data
(generate/grounded.py), which is the defence; this detector is the alarm: at ingest it marks
documents whose text talks *to a model* (overrides of earlier instructions, new roles, requests to
hide things from the user, exfiltration through links or images, chat-template control tokens), so
an operator can look at them. The flag is advisory: nothing is dropped or rewritten because of it.

It is a set of weighted regular-expression cues over normalised text (NFKC, lower case, zero-width
characters removed, whitespace collapsed). A document's score is the sum of the weights of the cue
families that match, capped at 1; it is flagged at ``THRESHOLD``. A cue that sits inside quotation
marks (or after "such as", "e.g.") in a text that discusses attacks ("prompt injection",
"attacker", "for example"), or in a story's dialogue ("'...,' she said"), counts half, and all such
cues together count as one: articles about prompt injection quote the phrases they describe. An
override that is denied ("does not override any instructions") does not count. Precision and recall on a labelled
set, and how the threshold was chosen, are in docs/security-injection.md. English only.

Every pattern is linear-time (no nested quantifiers, bounded gaps), and at most ``MAX_CHARS`` of a
document are scanned, so a huge document costs milliseconds, not minutes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

THRESHOLD = 0.5
MAX_CHARS = 2_000_000  # scanned per document: the head is where an injection has most effect anyway
_EXCERPT = 80  # characters of context kept per match
_MAX_MATCHES = 5

# who a cue addresses: a model, never a person ("note to the agent" may be an estate agent)
_AI = (r"(?:ai|a\.i\.|ai assistants?|assistants?|chat ?bots?|(?:large )?language models?|llms?|gpt|chatgpt|claude|"
       r"gemini|copilot|(?:ai|gpt|language model|llm)(?:[- ]?based|[- ]?powered)?(?: [a-z]+)? (?:agents?|models?|"
       r"systems?|tools?|crawlers?|readers?|assistants?|bots?)|(?:automated |ai )?summari[sz]ers?|"
       r"automated (?:summar(?:y|ies)|systems?|tools?|agents?|reviewers?|screening)|reviewer bots?|"
       r"(?:ai )?screening (?:systems?|tools?)|answer engines?)")
_PRIOR = (r"(?:all |any |the |your |my |these |those )?(?:of )?(?:the |your )?(?:previous|prior|above|earlier|"
          r"preceding|foregoing|original|initial|system|existing|current|old|other)?")
_RULES = (r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|context|constraints|"
          r"programming|restrictions|policies|orders|commands)")

# (family, weight, pattern); a family counts once, at its strongest match. Weights of 0.5 or more
# flag on their own (THRESHOLD); weaker cues flag only together.
_CUES: tuple[tuple[str, float, str], ...] = (
    # "ignore all previous instructions", "disregard your guidelines", "forget everything above"
    ("override", 0.6,
     rf"\b(?:ignore|disregard|forget|override|bypass|abandon|discard)\b[^.!?\n]{{0,12}}?\b{_PRIOR} ?{_RULES}\b"),
    ("override", 0.6,
     r"\b(?:ignore|disregard|forget)\b (?:everything|anything|all(?: of)?(?: that| the text)?) (?:above|before|said|"
     r"prior|earlier|previously|you (?:were|have been|'ve been) told)"),
    ("override", 0.5, r"\b(?:ignore|disregard|forget)\b (?:all |everything |anything )?(?:of )?(?:the |what is |"
                      r"what's )?(?:above|text above|preceding text|previous text)\b(?! (?:warning|error|message|step)"
                      r")"),
    ("override", 0.6, r"\b(?:your|my|the following|these are your) (?:new|updated|revised|real|actual|true) (?:system "
                      r")?(?:instructions|prompt|directives?|rules|task|orders)\b|\bnew (?:system )?(?:instructions|"
                      r"directives?|prompt|rules)s?:"),
    ("override", 0.6, r"\b(?:instructions|rules) (?:above|before this) (?:are|were) (?:void|cancel+ed|obsolete|fake|"
                      r"(?:only )?a test)"),
    ("override", 0.6, rf"\b(?:overrides?|supersedes?|takes? precedence over|replaces?) (?:all of |any of )?(?:your|the "
                      rf"model's|the assistant's) (?:other |previous |prior |original )?{_RULES}\b"),
    ("override", 0.5, r"\btreat (?:this|the text|these|the following|it)\b[^.!?\n]{0,40} as (?:its|your|an?|the) "
                      r"(?:highest[- ]priority |top[- ]priority |new |primary |main )?(?:instructions?|commands?|"
                      r"system prompt|directives?|orders)\b"),
    # the same in a few other languages
    ("override", 0.6, r"\bignor(?:ez|e|iere|ieren sie|a|are)\b[^.!?\n]{0,20}\b(?:instructions|anweisungen|"
                      r"instrucciones|istruzioni|consignes|vorgaben)\b"),
    # a new identity or mode for the reader
    ("role", 0.4, r"\byou are (?:now|no longer)\b|\bfrom now on,? you\b|\byour new (?:role|task|persona|identity|"
                  r"instructions?|goal|objective|purpose)\b|\bstay in character\b"),
    ("role", 0.5, r"\b(?:god|jailbreak|unrestricted|dan) mode\b|\bdo anything now\b|\bjailbroken\b"),
    ("role", 0.25, r"\b(?:developer|debug) mode\b"),
    ("role", 0.4, r"\btreat the user as (?:an? |the )?(?:administrator|admin|root|superuser|developer|owner|"
                  r"authori[sz]ed)\b"),
    ("role", 0.5, rf"\b{_AI}\b[^.\n]{{0,20}}\b(?:without|with no|free of|has no|have no) (?:any )?(?:restrictions|"
                  rf"rules|guidelines|filters|limits|limitations|censorship)\b"),
    ("role", 0.5, r"\b(?:safety|content|ethical) (?:filters?|guidelines|rules|restrictions|policies|settings) (?:are|"
                  r"have been|were) (?:now )?(?:disabled|suspended|off|removed|lifted|turned off|deactivated)\b|"
                  r"\bsystem override\b"),
    ("role", 0.3, r"\b(?:act|behave|respond) as (?:if you (?:were|are) )?(?:an? )?(?:unrestricted|unfiltered|evil|"
                  r"different|new)\b|\bpretend (?:to be|you are|that you)\b"),
    # text addressed to a model
    ("address", 0.5, rf"\b(?:note|message|instructions?|notice|reminder|directive|memo|p\.?s\.?)\b[^.!?\n]{{0,40}}? "
                     rf"(?:to|for|addressed to) (?:the |any |all |an? )?{_AI}\b"),
    ("address", 0.5, rf"\bif you are (?:an? |the )?{_AI}\b|\b(?:dear|hey|attention|hello|hi),? {_AI}\b|"
                     rf"\b{_AI},? (?:that (?:is |are )?)?(?:reading|processing|summari[sz]ing|parsing|indexing|"
                     rf"answering|crawling|manag(?:es|ing)) (?:this|these|the)\b|\bany (?:{_AI}|model) (?:answering|"
                     rf"reading|summari[sz]ing|using)\b"),
    ("address", 0.4, rf"^(?:\W{{0,6}})?(?:important |urgent )?(?:{_AI}|system)[,:] "),
    ("address", 0.5, rf"\byou,? (?:the|an?) (?:{_AI}|model)\b|(?:^|[.!?] )(?:to|for|attention,?) (?:any|all|the|every) "
                     rf"{_AI}\b[^:\n]{{0,40}}:|\b(?:whoever|anyone|anything|any (?:tool|system|program)) (?:that |who "
                     rf")?(?:summari[sz]es|processes|evaluates|classifies|screens|indexes|parses|answers questions "
                     rf"about) this\b"),
    ("address", 0.4, r"\b(?:ai|llm|assistant|model|gpt|bot|agent) (?:instructions?|directives?|prompt|commands?)\b|"
                     r"\b(?:hidden|secret|invisible) (?:prompt|instructions?|message|directive)s? (?:for|to)\b"),
    ("address", 0.4, r"^\W{0,6}(?:override|admin override|system override)[:!] "),
    ("address", 0.5, r"<!--[^>\n]{0,20}\b(?:ai|assistant|llm|model|agent|bot)s?\b"),
    ("address", 0.35, r"\bwhen (?:you are |you're )?(?:summari[sz]ing|answering (?:questions )?(?:about|from)|asked "
                      r"about|processing|reading) (?:this|these|the following)\b|\b(?:summar(?:y|ies)|answers?|"
                      r"responses?) (?:of|about|to questions about) this (?:document|page|file|text) (?:must|should|"
                      r"shall)\b"),
    ("hook", 0.25, r"\bbefore (?:answering|you answer|you reply|you respond|responding|replying)\b|\bin (?:your|every|"
                   r"each|any) (?:answer|response|reply)s?\b|\byour context(?: window)?\b|\b(?:the |this |our )?"
                   r"conversation (?:so far|history|above)\b|\bchat history\b|\bprevious messages\b"),
    # talk about the model's own prompt
    ("system-prompt", 0.5, r"\b(?:reveal|print|show|output|repeat|leak|disclose|display|dump|tell me|share|recite|"
                           r"echo)\b[^.!?\n]{0,25}\b(?:your|the|its) (?:full |entire |hidden |secret |original |"
                           r"initial )?(?:system prompt|system message|initial prompt|hidden prompt|pre-?prompt)\b"),
    ("system-prompt", 0.2, r"\bsystem prompt\b"),
    # chat-template control tokens and role headers
    ("control", 0.5, r"<\|[a-z_]{2,30}\|>|</?(?:start_of_turn|end_of_turn)>|\[/?inst\]|<</?sys>>|"
                     r"^#{2,4} ?(?:system|instruction|assistant|response)s?:?$|\[system\]\(#\w+\)"),
    ("control", 0.3, r"^(?:system|assistant)(?: message| prompt)?: |\buser: .{0,80} assistant: "),
    # keep it from the user
    ("secrecy", 0.6, r"\b(?:do not|don't|never|must not|without) (?:tell|telling|inform|informing|mention|mentioning|"
                     r"reveal|revealing|let|letting|alert|alerting|notify|notifying|disclose|disclosing)\b (?:to )?"
                     r"(?:the |this )?(?:user|human)s?\b[^.!?\n]{0,15}\b(?:about )?(?:this|that you|these|the "
                     r"(?:note|message|instruction))"),
    ("secrecy", 0.4, r"\b(?:do not|don't|never|must not|without) (?:tell|telling|inform|informing|mention|mentioning|"
                     r"reveal|revealing|alert|alerting|notify|notifying|disclose|disclosing)\b[^.!?\n]{0,30}\b(?:the |"
                     r"this )?(?:user|human)s?\b"),
    ("secrecy", 0.5, r"\b(?:the |this )?(?:user|human)s? (?:must|should|will) (?:never|not) (?:know|find out|learn|"
                     r"see|be told)\b|\bkeep (?:this|these|it) (?:secret|hidden|confidential) from\b|"
                     r"\b(?:silently|secretly|covertly|quietly)\b[^.!?\n]{0,40}\b(?:send|append|include|add|"
                     r"insert|forward|email|post|call|recommend)\b"),
    # exfiltration: images or links that carry data to a server, or instructions to send data out
    ("exfiltrate", 0.5, r"!?\[[^\]\n]{0,60}\]\(https?://[^)\s]{1,200}[?&][a-z_]{1,20}=(?:\{|\[|<|%7b|\$|data\b|"
                        r"info\b|secret|conversation|chat|history|user|prompt|email|password|token|session|question|"
                        r"message|content)"),
    ("exfiltrate", 0.4, r"\b(?:replace|fill|substitute|populate)\b[^.\n]{0,40}\bwith (?:the )?(?:user'?s?|their|the "
                        r"conversation|the chat)\b"),
    ("exfiltrate", 0.5, r"\b(?:send|post|forward|upload|transmit|exfiltrate|email|leak)\b[^.!?\n]{0,60}\b("
                        r"?:conversation|"
                        r"chat history|chat log|api keys?|passwords?|credentials|secrets?|tokens?|user'?s? (?:data|"
                        r"messages|emails|files|details)|system prompt|previous messages|results)\b[^.!?\n]{0,60}"
                        r"(?:https?://|www\.|\bto (?:this|the following|my) (?:url|address|server|endpoint|email))"),
    ("exfiltrate", 0.4, r"\b(?:send|post|forward|upload|transmit|exfiltrate|email|leak)\b[^.!?\n]{0,60}\b("
                        r"?:conversation|"
                        r"chat history|api keys?|passwords?|credentials|secrets?|tokens?|user'?s? (?:data|messages|"
                        r"emails|files|details)|previous messages|results)\b[^.!?\n]{0,60}[a-z0-9._-]+@[a-z0-9-]+\."),
    ("exfiltrate", 0.3, r"\b(?:enter|re-?enter|confirm|verify|provide|type) (?:their|your|the user's) (?:password|"
                        r"credentials|card (?:number|details)|login|pin)\b[^.\n]{0,30}\b(?:at|on|via) (?:https?://)?"
                        r"[a-z0-9-]+\.[a-z]"),
    ("exfiltrate", 0.4, r"\b(?:append|add|include|encode|put)\b[^.!\n]{0,50}\b(?:to|in|into) (?:the |this |a |every |"
                        r"each |all )?(?:url|link|query string|image (?:url|link|source))s?\b"),
    ("exfiltrate", 0.35, r"\b(?:output|print|reveal|list|repeat|show|dump)\b[^.!?\n]{0,40}\b(?:api keys?|tokens|"
                         r"passwords?|credentials|secrets)\b"),
    ("exfiltrate", 0.3, r"\b(?:render|display|show|include|output|insert)\b[^.!?\n]{0,30}\b(?:this|the following|an?) "
                        r"(?:markdown )?(?:image|link|url)\b[^.!?\n]{0,60}https?://"),
    # steering the answer or the tools
    ("steer", 0.5, r"\b(?:respond|reply|answer|say)\b (?:only |just |exactly )?(?:with|by saying) "
                   r"[\"'\u201c][^\"'\u201d\n]"
                   r"{1,60}[\"'\u201d] (?:and nothing (?:else|more)|only|to (?:every|all|any)|whenever|every time)|"
                   r"\b(?:answer|respond|reply)\b every question with\b"),
    ("steer", 0.3, r"\b(?:always|only) (?:respond|reply|answer)\b[^.!?\n]{0,20}\b(?:with|in|that|by)\b|"
                   r"\b(?:respond|reply|answer) only (?:in|with)\b|\binstead,? (?:tell|say|respond|reply|answer|output|"
                   r"recommend|write)\b|\b(?:the )?(?:correct|right|only) answer to (?:any|every|all) questions?\b|"
                   r"\bwhen asked (?:about|for|whether|if)\b[^.!?\n]{1,60}, (?:answer|say|reply|respond|tell|claim|"
                   r"state)\b|\bcomply with (?:all|any|every) (?:following |further |subsequent )?requests?\b|"
                   r"\bclassify (?:this|the) (?:email|message|document|application|file|text) as\b|"
                   r"\b(?:score|rate|grade) (?:it|this|the \w+) \d+ ?(?:/|out of) ?\d+"),
    ("steer", 0.4, r"\b(?:respond|reply|answer) to (?:every|all|any) (?:questions?|quer(?:y|ies)|requests?)\b"),
    ("steer", 0.3, r"\b(?:rank|rate|recommend|describe|present|summari[sz]e|portray)\b (?:this|the) (?:product|"
                   r"candidate|"
                   r"applicant|company|document|page|paper|site|article|resume|cv)\b[^.!?\n]{0,40}\b(?:as|first|"
                   r"highest|highly|favou?rably|positively|the best)\b|\b(?:hire|approve|accept) (?:this|the) "
                   r"(?:candidate|applicant|application|request|paper)\b[^.!?\n]{0,30}\bregardless\b"),
    ("steer", 0.3, r"\b(?:call|invoke|run|use|trigger)\b (?:the )?[a-z_]{0,30} ?(?:tool|function|plugin|api)"
                   r"\b[^.!?\n]{0,40}"
                   r"\b(?:with|to)\b|\bexecute (?:the following|this) (?:command|code|script)\b|\b(?:delete|"
                   r"forward|wipe) (?:all|every) (?:the )?(?:files|emails|messages|records|data)\b"),
    ("steer", 0.25, r"\b(?:you|the (?:ai|assistant|model)) (?:must|shall|should|will) (?:now |always |never )?"
                    r"(?:respond|reply|answer|say|obey|comply|follow (?:these|the following|my))\b|\b(?:tell|remind|"
                    r"warn|inform) (?:the user|users|anyone|everyone|the reader|people|every user)\b"),
)
CUES = tuple((name, weight, re.compile(pattern, re.M)) for name, weight, pattern in _CUES)
_DISCUSSION = re.compile(r"\bprompt injection|\binject(?:ed|ion|ions)\b|\bjailbreak(?:s|ing)?\b|\battack(?:er|ers|s)"
                         r"?\b|"
                         r"\bmalicious\b|\bfor example\b|\be\.g\.|\bsuch as\b|\bresearchers?\b|\bexploit|\bvulnerab|"
                         r"\bdefen[cs]e|\buntrusted\b|\bincident\b|\bsecurity\b|\bhidden text\b")
_EXAMPLE = re.compile(r"\b(?:such as|e\.g\.,?|for example,?|for instance,?|like)\s*[:(]?\s*$")
_SAID = re.compile(r"[\"\u201d'\u2019],? (?:the [a-z ]{1,30} |[a-z]+ )?(?:said|says|asked|replied|whispered|shouted|"
                   r"told|answered|muttered|added|continued)\b")
_NEGATION = re.compile(r"\b(?:not|never|cannot|can't|won't|doesn't|don't|didn't|no longer)\s+$")
_OPEN = re.compile(r"[\"\u201c\u201d`\u00ab\u00bb]|(?:^|[^\w])['\u2018]")
_CLOSE = re.compile(r"[\"\u201c\u201d`\u00ab\u00bb]|['\u2019](?:[^\w]|$)")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)


@dataclass(frozen=True)
class InjectionReport:
    flagged: bool
    score: float  # 0..1: the sum of the weights of the cue families found, capped at 1
    matches: tuple[str, ...] = ()  # short excerpts, one per family found, strongest first
    families: tuple[str, ...] = field(default=())

    def as_metadata(self) -> dict:
        """What goes into a document's metadata["injection"]."""
        return {"flagged": self.flagged, "score": round(self.score, 3), "cues": list(self.families),
                "matches": list(self.matches)}


def normalise(text: str) -> str:
    """Lower-cased NFKC text without zero-width characters, each line's whitespace collapsed (line
    breaks kept: role headers are line-anchored)."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).translate(_INVISIBLE).lower()
    text = text.replace("\u2019", "'")
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def _quoted(text: str, start: int, end: int) -> bool:
    """Whether [start, end) sits between quotation marks on its line (within 200 characters), or is
    introduced as an example ("such as ![x](...)")."""
    before = text[max(0, start - 200):start].rsplit("\n", 1)[-1]
    after = text[end:end + 200].split("\n", 1)[0]
    return bool(_OPEN.search(before)) and bool(_CLOSE.search(after)) or bool(_EXAMPLE.search(before[-40:]))


def _speech(text: str, start: int, end: int) -> bool:
    """Whether [start, end) is inside quoted dialogue of a story ("'Forget everything,' she said")."""
    before = text[max(0, start - 200):start].rsplit("\n", 1)[-1]
    after = text[end:end + 200].split("\n", 1)[0]
    return bool(_OPEN.search(before)) and bool(_SAID.search(after))


def _negated(text: str, start: int) -> bool:
    """Whether the cue is denied just before it ("this guide does not override any instructions")."""
    return bool(_NEGATION.search(text[max(0, start - 16):start]))


def detect(text: str, threshold: float = THRESHOLD) -> InjectionReport:
    """Score ``text`` for instruction-like text aimed at a model; flagged when the score reaches
    ``threshold``."""
    norm = normalise(text)
    discussion = len(set(m.group(0) for m in _DISCUSSION.finditer(norm))) >= 2
    best: dict[str, tuple[float, str]] = {}
    for family, weight, pattern in CUES:
        for m in pattern.finditer(norm):
            # an article about attacks quotes them: every quoted cue together counts as one, at half weight
            if family == "override" and _negated(norm, m.start()):
                continue
            quoted = discussion and _quoted(norm, m.start(), m.end()) or _speech(norm, m.start(), m.end())
            key, w = ("quoted-example", weight / 2) if quoted else (family, weight)
            if w > best.get(key, (0.0, ""))[0]:
                a, b = max(0, m.start() - 20), min(len(norm), m.end() + 20)
                best[key] = (w, norm[a:b][:_EXCERPT].strip())
            if key == family:
                break  # an unquoted match has the full weight: no stronger match of this pattern to find
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
    score = min(1.0, sum(w for w, _ in best.values()))
    return InjectionReport(score >= threshold, score, tuple(ex for _, (_, ex) in ranked[:_MAX_MATCHES]),
                           tuple(name for name, _ in ranked))
