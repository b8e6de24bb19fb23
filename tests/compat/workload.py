# python3 under the shim: dicts, lists, sets, json, re, str building, classes,
# sorting, a generator pipeline.  Fixed seed; every printed value is sorted or
# otherwise independent of hash randomisation.
import collections
import hashlib
import json
import random
import re
import sys

random.seed(1234)
alphabet = "abcdefghijklmnopqrstuvwxyz"
words = ["".join(random.choices(alphabet[:12], k=random.randint(2, 10))) for _ in range(60000)]

index = collections.defaultdict(list)
for i, w in enumerate(words):
    index[w[:2]].append(i)
print("prefixes", len(index), "largest", max(sorted(index), key=lambda k: len(index[k])))

counts = collections.Counter(words)
print("distinct", len(counts), "top", counts.most_common(3))

records = [{"id": i, "word": w, "tags": sorted(set(w)), "score": (i * 37) % 101 / 7}
           for i, w in enumerate(words[:20000])]
blob = json.dumps(records, sort_keys=True)
back = json.loads(blob)
assert back == records
print("json", len(blob), hashlib.sha256(blob.encode()).hexdigest()[:16])

text = " ".join(words[:30000])
pat = re.compile(r"\b([a-f]+)([g-l]{2,})\b")
found = pat.findall(text)
print("re", len(found), found[:3])
subbed = re.sub(r"(a+)(b+)", lambda m: m.group(2).upper() + str(len(m.group(1))), text)
print("sub", len(subbed), hashlib.md5(subbed.encode()).hexdigest()[:16])
print("split", len(re.split(r"[aeiou]+", text)))


class Node:
    __slots__ = ("key", "children")

    def __init__(self, key):
        self.key = key
        self.children = {}


root = Node("")
for w in words:
    n = root
    for ch in w:
        n = n.children.setdefault(ch, Node(ch))


def count(n):
    return 1 + sum(count(c) for c in n.children.values())


print("trie nodes", count(root))

matrix = [[(i * j) % 97 for j in range(300)] for i in range(300)]
t = list(zip(*matrix))
print("matrix", sum(map(sum, t)), sum(x for row in matrix for x in row if x % 2))

s = set()
for i in range(200000):
    s.add(i * 7 % 100003)
    if i % 3 == 0:
        s.discard(i * 11 % 100003)
print("set", len(s), sum(s) % 1000003)

lines = (f"{i:06d},{w},{len(w)}" for i, w in enumerate(words))
total = sum(int(l.rsplit(",", 1)[1]) for l in lines if l[3] in "13579")
print("gen", total)
big = bytearray()
for i in range(5000):
    big += bytes([i % 256]) * (i % 300)
print("bytes", len(big), hashlib.sha1(big).hexdigest()[:16])
print("sorted", sorted(words, key=lambda w: (len(w), w[::-1]))[1000:1003])
sys.stdout.flush()
