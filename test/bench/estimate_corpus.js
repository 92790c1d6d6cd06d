#!/usr/bin/env node
/*
 * The prompts bench_estimate.sh measures the token estimate on: English,
 * Vietnamese, code and JSON, short and long, built from fixed pieces with
 * a seeded generator (the same prompts at every run).  Prints them as a
 * JSON array, or with --kinds the kind of each as a second array.
 */
'use strict';

let seed = Number(process.argv[2] || 42);
function rnd() {
	/* mulberry32 */
	seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
	let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
	t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
	return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function pick(a) { return a[Math.floor(rnd() * a.length)]; }
function some(a, n) { let s = []; for (let i = 0; i < n; i++) s.push(pick(a)); return s; }

const english = [
	'The order arrived two days late and the box was damaged.',
	'I love the new dashboard, it is fast and easy to read.',
	'Please refund my subscription; I was charged twice this month.',
	'Customer reports that the mobile app crashes when uploading photos larger than 10 MB.',
	'Summarize the following ticket in one sentence for the support lead.',
	'Classify the sentiment of this review as positive, negative or neutral.',
	'Our quarterly revenue grew by 12.5% compared with the same period last year.',
	'The meeting has been rescheduled to Thursday at 3:30 pm in room B-204.',
	'Translate the product description into plain English without marketing language.',
	'He said the onboarding was confusing, especially the part about API keys.',
	'Extract the invoice number, the due date and the total amount.',
	'Shipping to Canada takes between five and seven business days.',
	"I can't log in since yesterday's update; the password reset e-mail never arrives.",
	'Write a polite reply apologizing for the delay and offering a 10% discount.'
];
const vietnamese = [
	'Đơn hàng của tôi bị giao trễ hai ngày và hộp bị móp.',
	'Tôi rất thích giao diện mới, nó nhanh và dễ đọc.',
	'Vui lòng hoàn tiền cho tôi vì tôi bị trừ tiền hai lần trong tháng này.',
	'Ứng dụng trên điện thoại bị treo khi tải ảnh lớn hơn 10 MB.',
	'Hãy tóm tắt phiếu hỗ trợ sau đây trong một câu.',
	'Phân loại cảm xúc của đánh giá này là tích cực, tiêu cực hay trung lập.',
	'Doanh thu quý này tăng 12,5% so với cùng kỳ năm ngoái.',
	'Cuộc họp được dời sang thứ Năm lúc 15 giờ 30 tại phòng B-204.',
	'Nhân viên giao hàng rất lịch sự và nhiệt tình.',
	'Sản phẩm không giống như mô tả trên trang web, chất lượng kém.',
	'Tôi không thể đăng nhập từ hôm qua, email đặt lại mật khẩu không đến.',
	'Xin cảm ơn quý khách đã tin tưởng và sử dụng dịch vụ của chúng tôi.'
];
const code = [
	'static int\nadd(int a, int b)\n{\n\treturn a + b;\n}\n',
	'def parse(line):\n    key, _, value = line.partition("=")\n    return key.strip(), value.strip()\n',
	'SELECT c.id, count(*) AS orders\nFROM customers c JOIN orders o ON o.customer_id = c.id\nWHERE o.created_at >= now() - interval \'30 days\'\nGROUP BY c.id\nORDER BY orders DESC\nLIMIT 10;\n',
	'for (i = 0; i < n; i++)\n\tif (items[i].state == MANY_READY && items[i].not_before <= now)\n\t\tsend(run, &items[i]);\n',
	'const res = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify(req) });\n',
	'public static Map<String, List<Integer>> group(List<Row> rows) {\n    return rows.stream().collect(Collectors.groupingBy(Row::key, Collectors.mapping(Row::value, Collectors.toList())));\n}\n',
	'#!/bin/sh\nset -eu\nfor f in "$@"; do\n  gzip -9 "$f" && echo "compressed $f"\ndone\n',
	'if err != nil {\n\treturn nil, fmt.Errorf("read %s: %w", path, err)\n}\n'
];
function jsonDoc() {
	const o = {
		id: Math.floor(rnd() * 1e6), sku: 'SKU-' + Math.floor(rnd() * 99999),
		name: pick(['Blue mug', 'Laptop stand', 'USB-C cable 2m', 'Cà phê sữa đá', 'Noise cancelling headphones']),
		price: Math.round(rnd() * 100000) / 100, tags: some(['sale', 'new', 'eco', 'gift', 'bulk'], 1 + Math.floor(rnd() * 3)),
		in_stock: rnd() < 0.7, updated_at: '2026-0' + (1 + Math.floor(rnd() * 9)) + '-1' + Math.floor(rnd() * 9) + 'T10:2' + Math.floor(rnd() * 9) + ':00Z',
		dimensions: { w: Math.floor(rnd() * 50), h: Math.floor(rnd() * 50), d: Math.floor(rnd() * 50) }
	};
	return JSON.stringify(o, null, rnd() < 0.5 ? 2 : 0);
}

const prompts = [];
const kinds = [];
const sizes = [1, 2, 4, 8, 30];
for (let i = 0; i < 400; i++) {
	const kind = ['english', 'vietnamese', 'code', 'json'][i % 4];
	const n = sizes[Math.floor(rnd() * sizes.length)];
	let p;
	if (kind === 'english')
		p = some(english, n).join(' ');
	else if (kind === 'vietnamese')
		p = some(vietnamese, n).join(' ');
	else if (kind === 'code')
		p = 'Explain what this code does:\n\n' + some(code, Math.max(1, n >> 1)).join('\n');
	else {
		const docs = [];
		for (let k = 0; k < Math.max(1, n >> 1); k++)
			docs.push(jsonDoc());
		p = 'Return the names of the items in stock:\n[' + docs.join(',\n') + ']';
	}
	prompts.push(p);
	kinds.push(kind);
}
process.stdout.write(JSON.stringify(process.argv.includes('--kinds') ? kinds : prompts));
