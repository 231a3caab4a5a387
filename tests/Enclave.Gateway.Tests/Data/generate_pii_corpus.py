#!/usr/bin/env python3
"""Generates pii-corpus.jsonl: labelled zh/en snippets for measuring the PII detector.

Each line: {"id", "lang", "text", "entities": [{"type", "value"}]}. Labels come from how each
value was constructed here (independently of the detector): valid resident IDs, Luhn-valid
cards, real-format phones etc. are positives; invalid checksums, impossible birth dates,
order numbers, timestamps, version strings and the like are unlabelled near-misses.
Deterministic: re-running reproduces the committed file byte for byte.
"""
import json
import random
import sys

rng = random.Random(20261123)
AREAS = ["110101", "310104", "440305", "510107", "330106", "420102", "320102", "370202", "610113", "500103"]
W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
C = "10X98765432"


def id_check(first17):
    return C[sum(int(d) * w for d, w in zip(first17, W)) % 11]


def rand_date(valid=True):
    if valid:
        y = rng.randint(1940, 2005)
        m = rng.randint(1, 12)
        d = rng.randint(1, 28)
        return f"{y:04d}{m:02d}{d:02d}"
    return rng.choice(["19990230", "20011331", "19850000", "21200101", "18800512", "19870431"])


def resident_id():
    body = rng.choice(AREAS) + rand_date() + f"{rng.randint(0, 999):03d}"
    return body + id_check(body)


def bad_checksum_id():
    body = rng.choice(AREAS) + rand_date() + f"{rng.randint(0, 999):03d}"
    good = id_check(body)
    return body + rng.choice([c for c in "0123456789X" if c != good])


def bad_date_id():
    body = rng.choice(AREAS) + rand_date(valid=False) + f"{rng.randint(0, 999):03d}"
    return body + id_check(body)


def legacy_id():
    return rng.choice(AREAS) + f"{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" + f"{rng.randint(0, 999):03d}"


def luhn_digit(partial):
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(valid=True, grouped=False):
    prefix = rng.choice(["622202", "622848", "621700", "436742", "552599", "625908"])
    length = rng.choice([16, 16, 19])
    partial = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    check = luhn_digit(partial)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    n = partial + check
    if grouped and length == 16:
        n = " ".join(n[i:i + 4] for i in range(0, 16, 4))
    return n


def mobile(style=0):
    n = rng.choice(["13", "15", "17", "18", "19"]) + str(rng.randint(0, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(8))
    if style == 1:
        return "+86 " + n
    if style == 2:
        return f"{n[:3]}-{n[3:7]}-{n[7:]}"
    if style == 3:
        return "+86" + n
    return n


def landline():
    area = rng.choice(["010", "021", "020", "0755", "0571", "028"])
    local = str(rng.randint(2, 8)) + "".join(str(rng.randint(0, 9)) for _ in range(7 if len(area) == 3 else 6))
    return rng.choice([f"{area}-{local}", f"({area}){local}"])


NAMES = ["zhang.wei", "li_na", "wang.fang", "chen.jie", "john.smith", "m.garcia", "liu-yang", "ops.team"]
DOMAINS = ["example.cn", "example.com", "corp.example.org", "mail.example.net", "bank.example.com.cn"]


def email():
    return f"{rng.choice(NAMES)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def ipv4():
    return ".".join(str(x) for x in [rng.choice([10, 172, 192, 203, 58, 114]), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)])


def ipv6():
    groups = [f"{rng.randint(0, 0xffff):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8:" + ":".join(groups[:3]) + "::" + groups[7]
    return ":".join(["2408", "8207"] + groups[2:])


def passport():
    return rng.choice(["E", "G"]) + "".join(str(rng.randint(0, 9)) for _ in range(8))


POS = {
    "cn_id": [resident_id, resident_id, resident_id, legacy_id],
    "mobile": [lambda: mobile(0), lambda: mobile(1), lambda: mobile(2), lambda: mobile(3)],
    "landline": [landline],
    "bank_card": [lambda: card(True, False), lambda: card(True, True)],
    "email": [email],
    "ipv4": [ipv4],
    "ipv6": [ipv6],
    "passport": [passport],
}

ZH = {
    "cn_id": ["我的身份证号是{}，请帮我核对。", "患者身份证：{}，已完成挂号。", "申请人证件号码{}，材料齐全。"],
    "mobile": ["请拨打{}联系客服。", "客户手机号{}已登记。", "紧急联系人电话：{}"],
    "landline": ["办公室电话{}，工作日可接通。", "请致电{}转人工服务。"],
    "bank_card": ["工资卡号{}，请核对。", "退款将打入尾号卡{}。", "银行卡：{} 开户行北京分行"],
    "email": ["请把报告发到{}。", "联系邮箱：{}"],
    "ipv4": ["服务器地址是{}，请检查防火墙。", "登录来源IP：{}"],
    "ipv6": ["节点的IPv6地址为{}。", "访问来源 {} 被拒绝"],
    "passport": ["护照号码{}，有效期至2030年。", "出境人员护照：{}"],
}
EN = {
    "cn_id": ["The applicant's resident ID is {}.", "ID number {} was verified at the desk."],
    "mobile": ["Call me at {} after 6pm.", "Customer phone: {}"],
    "landline": ["Our office line is {}.", "Reach the branch on {} during business hours."],
    "bank_card": ["Charge card {} for the invoice.", "Card number {} expires next year."],
    "email": ["Send the minutes to {} please.", "Contact: {}"],
    "ipv4": ["The request came from {} yesterday.", "Whitelist {} on the gateway."],
    "ipv6": ["Host {} answered the ping.", "Bind the service to {}."],
    "passport": ["Passport {} was scanned at the border.", "Traveller passport no. {}."],
}

NEAR = [
    ("zh", "订单号{}已发货，请注意查收。", lambda: "".join(str(rng.randint(0, 9)) for _ in range(rng.choice([18, 20, 22])))),
    ("zh", "身份证号{}校验失败（无效号码）。", bad_checksum_id),
    ("zh", "证件号码{}中的出生日期不存在。", bad_date_id),
    ("en", "Order {} shipped on Monday.", lambda: "SO" + "".join(str(rng.randint(0, 9)) for _ in range(12))),
    ("en", "Event timestamp {} recorded.", lambda: f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"),
    ("zh", "日志时间{}，任务完成。", lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"),
    ("en", "Card {} was declined (invalid number).", lambda: card(False, rng.random() < 0.5)),
    ("en", "Upgrade to version {} before Friday.", lambda: f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}"),
    ("en", "The value {} is out of range for an address.", lambda: f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"),
    ("zh", "工号{}的员工已入职。", lambda: "".join(str(rng.randint(0, 9)) for _ in range(8))),
    ("en", "Ticket number {} is closed.", lambda: "1" + rng.choice("012") + "".join(str(rng.randint(0, 9)) for _ in range(9))),
    ("zh", "发票代码{}，请妥善保存。", lambda: "".join(str(rng.randint(0, 9)) for _ in range(12))),
    ("en", "Mention {} on the forum.", lambda: "@" + rng.choice(NAMES)),
    ("en", "Mail goes to {} on this box.", lambda: rng.choice(NAMES) + "@localhost"),
    ("zh", "金额共计{}元。", lambda: f"{rng.randint(1000, 999999)}.{rng.randint(0, 99):02d}"),
    ("en", "Scale ratio {} applied.", lambda: f"{rng.randint(1, 16)}:{rng.randint(1, 9)}"),
    ("zh", "快递单号{}正在派送。", lambda: "SF" + "".join(str(rng.randint(0, 9)) for _ in range(12))),
    ("en", "Model deepseek-r1-{}b loaded.", lambda: str(rng.choice([7, 14, 32, 70]))),
]

CLEAN = [
    ("zh", "请总结这份季度报告的要点。"), ("zh", "帮我把这段话翻译成英文。"), ("zh", "今天的会议改到下午三点。"),
    ("en", "Summarise the attached policy in three bullet points."), ("en", "What is the capital of France?"),
    ("en", "Rewrite this paragraph in a formal tone."), ("zh", "解释一下什么是零信任架构。"),
    ("en", "List the steps to rotate a TLS certificate."),
]

records = []


def add(lang, text, entities):
    records.append({"id": len(records) + 1, "lang": lang, "text": text, "entities": entities})


for t, makers in POS.items():
    for i in range(30):
        v = rng.choice(makers)()
        lang = "zh" if i % 2 == 0 else "en"
        tpl = rng.choice((ZH if lang == "zh" else EN)[t])
        add(lang, tpl.format(v), [{"type": t, "value": v}])

for i in range(180):
    lang, tpl, maker = NEAR[i % len(NEAR)]
    add(lang, tpl.format(maker()), [])

for i in range(60):
    a, b = rng.sample(list(POS.keys()), 2)
    va, vb = rng.choice(POS[a])(), rng.choice(POS[b])()
    if i % 2 == 0:
        add("zh", f"联系人信息：{va}；备用：{vb}。", [{"type": a, "value": va}, {"type": b, "value": vb}])
    else:
        add("en", f"Contact details: {va}; alternate: {vb}.", [{"type": a, "value": va}, {"type": b, "value": vb}])

for i in range(40):
    lang, text = CLEAN[i % len(CLEAN)]
    add(lang, text, [])

out = sys.argv[1] if len(sys.argv) > 1 else "pii-corpus.jsonl"
with open(out, "w", encoding="utf-8") as f:
    for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(f"{len(records)} snippets, {sum(len(r['entities']) for r in records)} entities -> {out}")
