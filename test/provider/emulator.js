#!/usr/bin/env node
// Provider emulator for the "enrich" extension's tests.
//
// One process serves both provider APIs (LeadLex "enrich company", Slintel
// "enrich lead") over plain HTTP/1.1 and over HTTPS (HTTP/2 via ALPN h2, or
// HTTP/1.1), plus an optional HTTPS listener whose certificate names the wrong
// host.  It is deliberately as strict as the provider documents, keeps a
// ledger of everything it saw and charged, and can inject faults.
//
// Built-in modules only.  See README.md in this folder for the full API.
'use strict';

const http = require('http');
const http2 = require('http2');
const crypto = require('crypto');
const fs = require('fs');
const { URL, URLSearchParams } = require('url');
const { TextDecoder } = require('util');

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

const LL = 0;
const SL = 1;
const ANY = -1;
const PNAME = ['leadlex', 'slintel'];
const LL_PATH = '/functions/v1/api-gateway/v1/enrich/company';
const LL_PREFIX = '/functions/';
const SL_PATH = '/v2.0/lead/enrich';
const DEFAULT_BALANCE = 1000000;
const DEFAULT_QUOTA = 1000000;
const IDEM_TTL_MS = 24 * 3600 * 1000;
const MAX_BODY = 1 << 20;
const MAX_CAPTURE = 1000; // requests kept by the capture control member
const CAPTURE_BODY_MAX = 64 * 1024; // bytes of each captured body
const DAY_MS = 86400000;
const CACHE_MAX = 50000;
const NGHTTP2_INTERNAL_ERROR = http2.constants.NGHTTP2_INTERNAL_ERROR;

const LL_FIELDS = ['name', 'industry', 'size', 'founded_year', 'description',
  'hq_location', 'logo_url', 'linkedin_url', 'tech_stack'];
const LL_FIELD_SET = new Set(LL_FIELDS);

// Pre-compiled patterns (never compile a regex per request).
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
// canonical lower-case domain: >= 2 labels, LDH labels, TLD starts with a letter
const DOMAIN_RE = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const CT_JSON_RE = /^application\/json[ \t]*(?:;(.*))?$/i;
const CHARSET_RE = /(?:^|;)[ \t]*charset[ \t]*=[ \t]*"?([^";]*)"?/i;
const BEARER_RE = /^bearer ([\x21-\x7e]+)$/i;
const KEY_PARAM_RE = /^(?:x[-_]?)?api[-_]?key$|^key$|^token$|^access[-_]?token$|^auth(?:orization)?$|^bearer$/i;
const SL_URL_START_RE = /^https?:\/\//i;
const SL_AUTH_BAD_RE = /^https?:\/\/[^/?#]*[:@]/i;
const CTRL_CHARS_RE = /[\s\x00-\x1f\x7f]/;
const IN_PATH_RE = /^\/in\/([^/]+)$/;
const SLUG_PLAIN_RE = /^[a-z0-9_.-]+$/;
const SLUG_SPLIT_RE = /[-_.\s]+/;
const HAS_DIGIT_RE = /\d/;
const NON_ALPHA_RE = /[^a-z]/g;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------
// Seed data (from the provider documents, verbatim)
// ---------------------------------------------------------------------------

const ACME_DOMAIN = 'acme.com';
const ACME_ID = 'c0mpany-uuid-0001';
const ACME = {
  company: {
    id: 'c0mpany-uuid-0001',
    name: 'Acme Corp',
    domain: 'acme.com',
    industry: 'Legal Services',
    size: '201-500',
    founded_year: 1998,
    hq_location: 'New York, NY, US',
    linkedin_url: 'https://linkedin.com/company/acme',
  },
  fields_updated: ['industry', 'size', 'founded_year', 'hq_location'],
  source: 'vendor_a',
  confidence: 0.87,
};

const DEEPAK_SLUG = 'deepak-anchala-0043707';
const DEEPAK = {
  data: {
    id: '5dc164616d4235090c39736b',
    continent: 'North America',
    country: 'United States',
    education: [
      {
        end_date: 2008,
        school_location: 'Indore, Madhya Pradesh, India',
        school_website: 'iimidr.ac.in',
        school_name: 'Indian Institute Of Management Indore',
        degrees: ['Master Of Business Administration', 'Masters'],
        start_date: 2006,
      },
      {
        end_date: 2006,
        school_location: 'Kharagpur, West Bengal, India',
        school_website: 'iitkgp.ac.in',
        school_name: 'Indian Institute Of Technology Kharagpur',
        degrees: ['Bachelors'],
        start_date: 2002,
      },
    ],
    decision_making_power: 'High',
    city: 'San Francisco',
    company_website: 'slintel.com',
    experience: [
      {
        end_date: [],
        is_primary: 'true',
        company_profile: {},
        company_website: 'slintel.com',
        company_name: 'Slintel',
        location: { country: 'United States', city: 'Mountain View', state: 'California' },
        title_name: 'Founder',
        company_size: '1-10',
      },
      {
        is_primary: 'false',
        company_profile: {
          facebook_url: 'facebook.com/tracxn',
          twitter_url: 'twitter.com/tracxn',
          crunchbase_url: 'crunchbase.com/organization/tracxn',
        },
        company_website: 'tracxn.com',
        company_name: 'Tracxn',
        location: { country: 'United States', city: 'Palo Alto', state: 'California' },
        title_name: 'Vp, Business Development',
        company_size: '501-1000',
      },
    ],
    technologies: [
      {
        category: 'Finance and Accounting',
        subcategory: 'Billing And Provisioning',
        technology: 'Square Invoices',
        last_detected: 1589915623,
      },
      {
        category: 'Platform and Storage',
        subcategory: 'Backup and Disaster Recovery',
        technology: 'Rewind.io',
        last_detected: 1591092110,
      },
    ],
    company_linkedin_url: 'https://www.linkedin.com/company/slintel/',
    skills: ['Business Strategy', 'Portfolio Management', 'Financial Modeling', 'Management',
      'Banking', 'Consulting', 'Business Development', 'Requirements Analysis',
      'Business Analytics', 'Investments', 'Business Analysis', 'Team Management',
      'Pre Sales', 'Business Intelligence', 'Strategy', 'Financial Services', 'Sales',
      'Management Consulting'],
    company_state: 'California',
    function: 'Ceo/founder/co-founder',
    company_city: 'Santa Clara',
    state: 'California',
    email: 'deepak@slintel.com',
    divison: 'General',
    company_id: '5c3b016dd55ae49f1b77d266',
    lead_title: 'Founder',
    company_country: 'United States',
    company_products_services: ['Information and Communications Technology (ICT)',
      'Information Technology', 'Marketing Automation', 'Sales Automation'],
    company_phone_number: '214-400-7300',
    industry: 'Computer Software',
    company_sector: 'Technology',
    company_name: 'Slintel',
    company_twitter_url: 'https://twitter.com/slintel_inc',
    name: 'Deepak Anchala',
    company_facebook_url: 'https://www.facebook.com/Slintel-1070643269715139/',
    linkedin_url: 'http://www.linkedin.com/in/deepak-anchala-0043707',
    company_size: '11-50',
    last_funded_on: 1576108800,
  },
};
const DEEPAK_JSON = JSON.stringify(DEEPAK);
const EMPTY_LEAD_JSON = '{"data":{}}';

// Lists for deterministic synthetic data.
const INDUSTRIES = ['Computer Software', 'Financial Services', 'Legal Services', 'Retail',
  'Manufacturing', 'Hospital & Health Care', 'Education Management',
  'Marketing and Advertising', 'Logistics and Supply Chain', 'Real Estate', 'Biotechnology',
  'Telecommunications'];
const SIZES = ['1-10', '11-50', '51-200', '201-500', '501-1000', '1001-5000', '5001-10000', '10001+'];
const LOCATIONS = ['New York, NY, US', 'San Francisco, CA, US', 'Austin, TX, US', 'Chicago, IL, US',
  'London, GB', 'Berlin, DE', 'Paris, FR', 'Toronto, ON, CA', 'Sydney, NSW, AU',
  'Bangalore, KA, IN', 'Amsterdam, NL', 'Stockholm, SE'];
const SL_COMPANIES = [
  { name: 'Northwind Traders', website: 'northwind.example', industry: 'Retail', sector: 'Consumer', size: '201-500', city: 'Seattle', state: 'Washington', country: 'United States', continent: 'North America' },
  { name: 'Globex', website: 'globex.example', industry: 'Computer Software', sector: 'Technology', size: '1001-5000', city: 'Austin', state: 'Texas', country: 'United States', continent: 'North America' },
  { name: 'Initech', website: 'initech.example', industry: 'Information Technology and Services', sector: 'Technology', size: '501-1000', city: 'Dallas', state: 'Texas', country: 'United States', continent: 'North America' },
  { name: 'Umbrella Health', website: 'umbrella-health.example', industry: 'Hospital & Health Care', sector: 'Healthcare', size: '5001-10000', city: 'Boston', state: 'Massachusetts', country: 'United States', continent: 'North America' },
  { name: 'Stark Logistics', website: 'stark-logistics.example', industry: 'Logistics and Supply Chain', sector: 'Industrials', size: '1001-5000', city: 'Hamburg', state: 'Hamburg', country: 'Germany', continent: 'Europe' },
  { name: 'Wayne Financial', website: 'wayne-financial.example', industry: 'Financial Services', sector: 'Finance', size: '10001+', city: 'London', state: 'England', country: 'United Kingdom', continent: 'Europe' },
  { name: 'Hooli', website: 'hooli.example', industry: 'Internet', sector: 'Technology', size: '10001+', city: 'Palo Alto', state: 'California', country: 'United States', continent: 'North America' },
  { name: 'Soylent Foods', website: 'soylent.example', industry: 'Food & Beverages', sector: 'Consumer', size: '51-200', city: 'Toronto', state: 'Ontario', country: 'Canada', continent: 'North America' },
];
const SL_TITLES = [
  ['Founder', 'Ceo/founder/co-founder', 'High'],
  ['Vp, Sales', 'Sales', 'High'],
  ['Head Of Marketing', 'Marketing', 'High'],
  ['Software Engineer', 'Engineering', 'Low'],
  ['Engineering Manager', 'Engineering', 'Medium'],
  ['Account Executive', 'Sales', 'Low'],
  ['Chief Financial Officer', 'Finance', 'High'],
  ['Product Manager', 'Product', 'Medium'],
];
const SL_SKILLS = ['Sales', 'Management', 'Strategy', 'Negotiation', 'Leadership',
  'Business Development', 'Marketing', 'Sql', 'Python', 'Project Management',
  'Customer Success', 'Analytics'];

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

function usage(msg) {
  if (msg) process.stderr.write('emulator: ' + msg + '\n');
  process.stderr.write('usage: node emulator.js --http-port N --https-port M --cert server.pem --key server.key\n' +
    '       [--wrong-host-port K --wrong-cert wrong.pem --wrong-key wrong.key] [--port-file FILE]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { httpPort: null, httpsPort: null, cert: null, key: null, wrongPort: null,
    wrongCert: null, wrongKey: null, portFile: null };
  const map = { '--http-port': 'httpPort', '--https-port': 'httpsPort', '--cert': 'cert',
    '--key': 'key', '--wrong-host-port': 'wrongPort', '--wrong-cert': 'wrongCert',
    '--wrong-key': 'wrongKey', '--port-file': 'portFile' };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    if (a === '-h' || a === '--help') usage();
    const k = map[a];
    if (!k) usage('unknown option ' + a);
    if (v === undefined) { if (i + 1 >= argv.length) usage('missing value for ' + a); v = argv[++i]; }
    o[k] = v;
  }
  for (const k of ['httpPort', 'httpsPort', 'wrongPort']) {
    if (o[k] !== null) {
      if (!/^\d+$/.test(o[k]) || +o[k] > 65535) usage('bad port ' + o[k]);
      o[k] = +o[k];
    }
  }
  if (o.httpPort === null || o.httpsPort === null) usage('--http-port and --https-port are required');
  if (!o.cert || !o.key) usage('--cert and --key are required');
  if (o.wrongPort !== null && (!o.wrongCert || !o.wrongKey)) usage('--wrong-host-port needs --wrong-cert and --wrong-key');
  return o;
}

// ---------------------------------------------------------------------------
// Configuration state (changed by /_control)
// ---------------------------------------------------------------------------

function newKey(prov, permissions, balance) {
  return { permissions, write: prov === LL ? permissions.indexOf('write:enrich') >= 0 : true, balance };
}

function newQuota(limit, periodMs, now) {
  return { limit, periodMs, start: now, idx: -1, nextReset: 0, used: new Map() };
}

function defaultConfig() {
  const now = Date.now();
  return {
    keys: [
      new Map([
        ['wbk_test_key', newKey(LL, ['write:enrich'], DEFAULT_BALANCE)],
        ['wbk_readonly_key', newKey(LL, [], DEFAULT_BALANCE)],
      ]),
      new Map([['sl_test_key', newKey(SL, [], DEFAULT_BALANCE)]]),
    ],
    latency: [0, 0],
    jitter: [0, 0],
    rate: [null, null],
    quota: [newQuota(DEFAULT_QUOTA, null, now), newQuota(DEFAULT_QUOTA, null, now)],
    faults: [],
    capture: 0,
  };
}

function freshLedger() {
  return {
    requests: [0, 0],
    other: 0,
    byStatus: [Object.create(null), Object.create(null)],
    charged: [new Map(), new Map()],
    chargedInputs: [new Map(), new Map()],
    reqByInput: [new Map(), new Map()],
    replays: 0,
    peak: [inflight[0], inflight[1]],
    peakTotal: inflight[0] + inflight[1],
    conns: { http: 0, https: 0, wrong_host: 0, h2_sessions: 0 },
    faults: [Object.create(null), Object.create(null)],
    keysInUrl: 0,
    internalErrors: 0,
  };
}

const inflight = [0, 0]; // API requests being processed (arrival -> response done / socket gone)
const active = [0, 0]; // of those, requests admitted by the rate limiter
let cfg = defaultConfig();
let led = freshLedger();
let knownIds = new Map(); // company id -> domain, for ids this emulator has returned
let workspace = new Map(); // apiKey \n domain -> the company record LeadLex keeps
let dataVersion = 0; // the providers' data as of this version (0: the document's)
let idemStore = new Map(); // apiKey \n idemKey -> record
let faultSeq = 0;
let captured = []; // the last cfg.capture API requests, oldest first

const llCache = new Map(); // domain -> precomputed company entry
const slCache = new Map(); // slug -> precomputed lead JSON

const RID_PREFIX = crypto.randomBytes(5).toString('hex');
let ridCounter = 0;
function requestId() {
  ridCounter++;
  return 'req_' + RID_PREFIX + ridCounter.toString(16).padStart(11, '0');
}

function bump(map, k, n) {
  const v = map.get(k);
  map.set(k, v === undefined ? n : v + n);
}

// ---------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------

function sha(s) {
  return crypto.createHash('sha256').update(s).digest();
}

function capitalise(w) {
  return w.length === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1);
}

function uuidFrom(h) {
  const b = Buffer.from(h.subarray(0, 16));
  b[6] = (b[6] & 0x0f) | 0x50; // version 5-style
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const x = b.toString('hex');
  return x.slice(0, 8) + '-' + x.slice(8, 12) + '-' + x.slice(12, 16) + '-' + x.slice(16, 20) + '-' + x.slice(20);
}

// A LeadLex company entry: {domain, company, fieldsUpdated, source, confidence, prefix}
// prefix + credits_remaining + '}}' is the full 200 body.
function llEntry(domain) {
  let e = llCache.get(domain);
  if (e !== undefined) return e;
  let company, fieldsUpdated, source, confidence;
  if (domain === ACME_DOMAIN) {
    company = ACME.company;
    fieldsUpdated = ACME.fields_updated;
    source = ACME.source;
    confidence = ACME.confidence;
  } else {
    const h = sha('leadlex:' + domain);
    const label = domain.slice(0, domain.indexOf('.'));
    company = {
      id: uuidFrom(h),
      name: capitalise(label) + ' Inc',
      domain,
      industry: INDUSTRIES[h[16] % INDUSTRIES.length],
      size: SIZES[h[17] % SIZES.length],
      founded_year: 1950 + (h.readUInt16BE(18) % 71),
      hq_location: LOCATIONS[h[20] % LOCATIONS.length],
      linkedin_url: 'https://linkedin.com/company/' + label,
    };
    fieldsUpdated = ['industry', 'size', 'founded_year', 'hq_location'];
    source = (h[21] & 1) ? 'vendor_b' : 'vendor_a';
    confidence = (50 + (h[22] % 50)) / 100;
  }
  e = {
    domain, company, fieldsUpdated, source, confidence,
    prefix: '{"data":{"company":' + JSON.stringify(company) + ',"fields_updated":' +
      JSON.stringify(fieldsUpdated) + ',"source":' + JSON.stringify(source) +
      ',"confidence":' + confidence + ',"credits_remaining":',
  };
  if (llCache.size >= CACHE_MAX) llCache.clear();
  llCache.set(domain, e);
  return e;
}

// The upstream data of a domain now: version 0 is llEntry's; each later
// version changes industry, size and hq_location (never to the value of
// the version before).
function llCurrent(e) {
  if (dataVersion === 0) return e.company;
  const h = sha('leadlex:' + e.domain);
  const c = Object.assign({}, e.company);
  const pick = (list, f, b) => {
    let i = (h[b] + dataVersion) % list.length;
    if (list[i] === e.company[f]) i = (i + 1) % list.length;
    return list[i];
  };
  c.industry = pick(INDUSTRIES, 'industry', 16);
  c.size = pick(SIZES, 'size', 17);
  c.hq_location = pick(LOCATIONS, 'hq_location', 20);
  return c;
}

const isEmpty = (v) => v === undefined || v === null || v === '';

// Enriches the workspace record of a domain: a new record starts with
// what identifies the company (id, name, domain, linkedin_url); fill-only
// sets the empty fields from the current data, overwrite also replaces the
// ones that differ.  Only fields in the whitelist are touched.  Returns
// {rec, updated}: the record and the fields changed, in the data's order.
function llEnrich(apiKey, e, fields, overwrite) {
  const wkey = apiKey + '\n' + e.domain;
  let rec = workspace.get(wkey);
  const cur = llCurrent(e);
  if (rec === undefined) {
    rec = { company: { id: cur.id, name: cur.name, domain: cur.domain, linkedin_url: cur.linkedin_url }, plain: null };
    if (workspace.size >= CACHE_MAX * 10) workspace.clear();
    workspace.set(wkey, rec);
  }
  const updated = [];
  for (const k in cur) {
    if (k === 'id' || k === 'domain' || (fields !== null && fields.indexOf(k) < 0)) continue;
    const have = rec.company[k];
    if (isEmpty(have) ? !isEmpty(cur[k]) : (overwrite && have !== cur[k])) {
      rec.company[k] = cur[k];
      updated.push(k);
    }
  }
  if (updated.length > 0) rec.plain = null;
  return { rec, updated, cur };
}

// A record's company in the data's key order, limited to id, domain and the whitelist.
function llRecordCompany(rec, cur, fields) {
  const out = {};
  for (const k in cur) {
    if (rec.company[k] === undefined) continue;
    if (k === 'id' || k === 'domain' || fields === null || fields.indexOf(k) >= 0) out[k] = rec.company[k];
  }
  return out;
}

function llFilteredCompany(e, fields) {
  if (fields === null) return e.company;
  const out = {};
  for (const k in e.company) {
    if (k === 'id' || k === 'domain' || fields.indexOf(k) >= 0) out[k] = e.company[k];
  }
  return out;
}

// A 200 body of the data alone, as a new record would get it (fault bodies:
// a fault leaves the workspace alone).
function llStaticBody(domain, fields, balance) {
  const e = llEntry(domain);
  if (fields === null) return e.prefix + balance + '}}';
  return JSON.stringify({ data: {
    company: llFilteredCompany(e, fields),
    fields_updated: e.fieldsUpdated.filter((f) => fields.indexOf(f) >= 0),
    source: e.source,
    confidence: e.confidence,
    credits_remaining: balance,
  } });
}

// The 200 body for a domain: the workspace record after this enrichment.
function llBody(apiKey, domain, fields, overwrite, balance) {
  const e = llEntry(domain);
  const { rec, updated, cur } = llEnrich(apiKey, e, fields, overwrite);
  // a new record of the document's data, all fields: the precomputed body
  if (fields === null && dataVersion === 0 && updated.length === e.fieldsUpdated.length &&
      updated.every((f, i) => f === e.fieldsUpdated[i])) {
    return e.prefix + balance + '}}';
  }
  if (fields === null && updated.length === 0) {
    if (rec.plain === null) {
      rec.plain = '{"data":{"company":' + JSON.stringify(llRecordCompany(rec, cur, null)) +
        ',"fields_updated":[],"source":' + JSON.stringify(e.source) + ',"confidence":' + e.confidence +
        ',"credits_remaining":';
    }
    return rec.plain + balance + '}}';
  }
  return JSON.stringify({ data: {
    company: llRecordCompany(rec, cur, fields),
    fields_updated: updated,
    source: e.source,
    confidence: e.confidence,
    credits_remaining: balance,
  } });
}

// Canonical slug encoding: bytes outside a-z 0-9 - _ . as upper-case %XX.
function encodeSlug(slug) {
  if (SLUG_PLAIN_RE.test(slug)) return slug;
  const b = Buffer.from(slug, 'utf8');
  let s = '';
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f || c === 0x2e) s += String.fromCharCode(c);
    else s += '%' + (c < 16 ? '0' : '') + c.toString(16).toUpperCase();
  }
  return s;
}

function slLeadObject(slug) {
  if (slug === DEEPAK_SLUG) return JSON.parse(DEEPAK_JSON).data;
  const h = sha('slintel:' + slug);
  const words = slug.split(SLUG_SPLIT_RE).filter((w) => w.length > 0 && !HAS_DIGIT_RE.test(w));
  const name = words.length ? words.map(capitalise).join(' ') : 'Unknown Person';
  const co = SL_COMPANIES[h[12] % SL_COMPANIES.length];
  const t = SL_TITLES[h[13] % SL_TITLES.length];
  let local = (words[0] || '').replace(NON_ALPHA_RE, '');
  if (!local) local = 'contact';
  const skills = [];
  for (let i = 0; i < 4; i++) {
    const s = SL_SKILLS[h[14 + i] % SL_SKILLS.length];
    if (skills.indexOf(s) < 0) skills.push(s);
  }
  return {
    id: h.subarray(0, 12).toString('hex'),
    continent: co.continent,
    country: co.country,
    city: co.city,
    state: co.state,
    name,
    linkedin_url: 'http://www.linkedin.com/in/' + encodeSlug(slug),
    lead_title: t[0],
    function: t[1],
    decision_making_power: t[2],
    email: local + '@' + co.website,
    skills,
    experience: [{
      is_primary: 'true',
      company_profile: {},
      company_website: co.website,
      company_name: co.name,
      location: { country: co.country, city: co.city, state: co.state },
      title_name: t[0],
      company_size: co.size,
    }],
    education: [],
    company_id: h.subarray(12, 24).toString('hex'),
    company_name: co.name,
    company_website: co.website,
    company_linkedin_url: 'https://www.linkedin.com/company/' + co.website.slice(0, co.website.indexOf('.')) + '/',
    company_size: co.size,
    company_city: co.city,
    company_state: co.state,
    company_country: co.country,
    company_sector: co.sector,
    industry: co.industry,
  };
}

function slBody(slug) {
  if (slug === DEEPAK_SLUG) return DEEPAK_JSON;
  let b = slCache.get(slug);
  if (b !== undefined) return b;
  b = JSON.stringify({ data: slLeadObject(slug) });
  if (slCache.size >= CACHE_MAX) slCache.clear();
  slCache.set(slug, b);
  return b;
}

// ---------------------------------------------------------------------------
// Request context, accounting, response writing
// ---------------------------------------------------------------------------

function Ctx(prov, req, res, h2) {
  this.prov = prov;
  this.req = req;
  this.res = res;
  this.h2 = h2;
  this.t0 = Date.now();
  this.done = false;
  this.accepted = false;
  this.timer = null;
  this.cleanup = null;
  this.key = null;
  this.input = null;
  this.domain = null; // LeadLex: domain to build bodies from
  this.fields = null;
  this.slug = null; // Slintel: canonical slug
  this.notBefore = 0;
  this.due = 0;
  this.rateOverride = null;
  this.qs = '';
  this.rawUrl = null;
}

function begin(prov, req, res, h2) {
  const ctx = new Ctx(prov, req, res, h2);
  led.requests[prov]++;
  const n = ++inflight[prov];
  if (n > led.peak[prov]) led.peak[prov] = n;
  const t = inflight[0] + inflight[1];
  if (t > led.peakTotal) led.peakTotal = t;
  res.on('close', () => finish(ctx));
  return ctx;
}

function finish(ctx) {
  if (ctx.done) return;
  ctx.done = true;
  inflight[ctx.prov]--;
  if (ctx.accepted) active[ctx.prov]--;
  if (ctx.timer !== null) { clearTimeout(ctx.timer); ctx.timer = null; }
  if (ctx.cleanup !== null) { const f = ctx.cleanup; ctx.cleanup = null; f(); }
}

function recStatus(ctx, s) {
  const bs = led.byStatus[ctx.prov];
  bs[s] = (bs[s] | 0) + 1;
}

// Absolute time at which this request's response is due: arrival + latency
// (+ jitter), computed once per request; never before ctx.notBefore.
function dueAt(ctx) {
  if (ctx.due === 0) {
    const p = ctx.prov;
    let d = cfg.latency[p];
    const j = cfg.jitter[p];
    if (j > 0) d += Math.random() * j;
    ctx.due = ctx.t0 + d;
  }
  if (ctx.notBefore > ctx.due) ctx.due = ctx.notBefore;
  return ctx.due;
}

// Run fn(ctx) after the provider's latency (immediately when 0).
function later(ctx, fn, a, b, c) {
  const d = dueAt(ctx) - Date.now();
  if (d > 0) ctx.timer = setTimeout(laterFire, d, ctx, fn, a, b, c);
  else fn(ctx, a, b, c);
}
function laterFire(ctx, fn, a, b, c) {
  ctx.timer = null;
  if (ctx.done) return;
  fn(ctx, a, b, c);
}

function quotaRefresh(q, now) {
  if (q.periodMs === null) {
    const idx = Math.floor(now / DAY_MS);
    if (idx !== q.idx) { q.idx = idx; q.used.clear(); q.nextReset = (idx + 1) * DAY_MS; }
  } else {
    const idx = Math.floor((now - q.start) / q.periodMs);
    if (idx !== q.idx) { q.idx = idx; q.used.clear(); q.nextReset = q.start + (idx + 1) * q.periodMs; }
  }
}

// Starts a new fixed window when the whole second has turned.
function fixedWindowRefresh(rl, now) {
  const idx = Math.floor(now / 1000);
  if (idx !== rl.winIdx) { rl.winIdx = idx; rl.winUsed = 0; }
}

function llHeaders(ctx, h) {
  h['X-Request-ID'] = requestId();
  const q = cfg.quota[LL];
  const now = Date.now();
  quotaRefresh(q, now);
  const rl = cfg.rate[LL];
  if (rl !== null && rl.fixed && ctx.rateOverride === null) {
    // the headers describe the current one-second window
    fixedWindowRefresh(rl, now);
    h['X-RateLimit-Limit'] = String(rl.perSecond);
    h['X-RateLimit-Remaining'] = String(Math.max(rl.perSecond - rl.winUsed, 0));
    h['X-RateLimit-Reset'] = String(rl.winIdx + 1);
    return;
  }
  if (ctx.rateOverride !== null) {
    h['X-RateLimit-Limit'] = String(q.limit);
    h['X-RateLimit-Remaining'] = '0';
    h['X-RateLimit-Reset'] = String(ctx.rateOverride);
    return;
  }
  let rem = q.limit;
  if (ctx.key !== null) {
    const u = q.used.get(ctx.key);
    if (u !== undefined) rem = q.limit - u;
    if (rem < 0) rem = 0;
  }
  h['X-RateLimit-Limit'] = String(q.limit);
  h['X-RateLimit-Remaining'] = String(rem);
  h['X-RateLimit-Reset'] = String(Math.ceil(q.nextReset / 1000));
}

function baseHeaders(ctx, ctype, len) {
  const h = { 'Content-Type': ctype };
  if (len >= 0) h['Content-Length'] = String(len);
  if (ctx.prov === LL) llHeaders(ctx, h);
  return h;
}

// Send a complete response after the latency.  `status` is recorded now.
function send(ctx, status, body, extra) {
  recStatus(ctx, status);
  later(ctx, writeNow, status, body, extra);
}

function writeNow(ctx, status, body, extra) {
  const h = baseHeaders(ctx, 'application/json', Buffer.byteLength(body));
  if (extra !== undefined && extra !== null) for (const k in extra) h[k] = extra[k];
  try {
    ctx.res.writeHead(status, h);
    ctx.res.end(body);
  } catch (e) {
    internalError(e);
  }
  // The response is complete: the request no longer counts as in flight.
  // (Waiting for 'close' would let a client's next request, sent after it
  // read this response, arrive first and be counted on top of it.)
  finish(ctx);
}

function errBody(code, message) {
  return '{"error":{"code":' + JSON.stringify(code) + ',"message":' + JSON.stringify(message) + '}}';
}

function sendError(ctx, status, code, message, extra) {
  send(ctx, status, errBody(code, message), extra);
}

function internalError(e) {
  led.internalErrors++;
  process.stderr.write('emulator: internal error: ' + (e && e.stack || e) + '\n');
}

// ---------------------------------------------------------------------------
// Rate limiting, quota
// ---------------------------------------------------------------------------

// Returns true when admitted; otherwise a 429 has been sent.
function admit(ctx) {
  const p = ctx.prov;
  const now = Date.now();
  const q = cfg.quota[p];
  quotaRefresh(q, now);
  const used = q.used.get(ctx.key) || 0;
  if (used >= q.limit) {
    let ra = Math.ceil((q.nextReset - now) / 1000);
    if (ra < 1) ra = 1;
    sendError(ctx, 429, 'rate_limited', 'Daily quota of ' + q.limit + ' requests exhausted',
      { 'Retry-After': String(ra) });
    return false;
  }
  const rl = cfg.rate[p];
  if (rl !== null && rl.fixed) {
    // a fixed window per whole second, announced in X-RateLimit-* headers
    fixedWindowRefresh(rl, now);
    if (rl.winUsed >= rl.perSecond) {
      sendError(ctx, 429, 'rate_limited', 'Rate limit of ' + rl.perSecond + ' requests per second exceeded',
        rl.retryAfter ? { 'Retry-After': '1' } : null);
      return false;
    }
    rl.winUsed++;
  } else if (rl !== null) {
    if (rl.perSecond !== null) {
      if (rl.perSecond === 0 || rl.ring[rl.pos] > now - 1000) {
        let ra = rl.perSecond === 0 ? 1 : Math.ceil((rl.ring[rl.pos] + 1000 - now) / 1000);
        if (ra < 1) ra = 1;
        sendError(ctx, 429, 'rate_limited', 'Rate limit of ' + rl.perSecond + ' requests per second exceeded',
          rl.retryAfter ? { 'Retry-After': String(ra) } : null);
        return false;
      }
    }
    if (rl.maxConcurrent !== null && active[p] >= rl.maxConcurrent) {
      sendError(ctx, 429, 'rate_limited', 'Too many concurrent requests (max ' + rl.maxConcurrent + ')',
        rl.retryAfter ? { 'Retry-After': '1' } : null);
      return false;
    }
    if (rl.perSecond !== null) {
      rl.ring[rl.pos] = now;
      rl.pos = (rl.pos + 1) % rl.perSecond;
    }
  }
  q.used.set(ctx.key, used + 1);
  ctx.accepted = true;
  active[p]++;
  return true;
}

function keyInQuery(qs) {
  const sp = new URLSearchParams(qs);
  for (const [k, v] of sp) {
    if (KEY_PARAM_RE.test(k)) return true;
    if (cfg.keys[0].has(v) || cfg.keys[1].has(v)) return true;
  }
  // a known key anywhere in the raw query (keys shorter than 8 chars would
  // match ordinary text, so they are only caught as whole parameter values)
  for (let p = 0; p < 2; p++) {
    for (const k of cfg.keys[p].keys()) if (k.length >= 8 && qs.includes(k)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

const FAULT_KINDS = new Set(['status', 'reset', 'reset_mid_body', 'hang', 'slow_drip',
  'malformed_json', 'truncated_json', 'huge_body', 'invalid_utf8', 'nul_escape',
  'deep_nesting', 'wrong_shape', 'html', 'redirect']);

function pickFault(prov, s1, s2) {
  const fl = cfg.faults;
  if (fl.length === 0) return null;
  for (let i = 0; i < fl.length; i++) {
    const f = fl[i];
    if (f.remaining === 0) continue;
    if (f.provider !== ANY && f.provider !== prov) continue;
    if (f.match !== null) {
      const m1 = s1 !== null && s1.includes(f.match);
      const m2 = s2 !== null && s2 !== undefined && s2.includes(f.match);
      if (!m1 && !m2) continue;
    }
    if (f.remaining > 0) f.remaining--;
    f.applied++;
    const fa = led.faults[prov];
    fa[f.kind] = (fa[f.kind] | 0) + 1;
    return f;
  }
  return null;
}

function defaultCode(prov, status) {
  switch (status) {
    case 400: return 'validation_error';
    case 401: return prov === LL ? 'invalid_key' : 'unauthorized';
    case 402: return 'insufficient_credits';
    case 403: return prov === LL ? 'insufficient_permissions' : 'forbidden';
    case 404: return 'not_found';
    case 405: return 'method_not_allowed';
    case 409: return prov === LL ? 'no_match' : 'conflict';
    case 429: return 'rate_limited';
    case 500: return 'internal_error';
    case 502: return 'bad_gateway';
    case 503: return 'service_unavailable';
    case 504: return 'gateway_timeout';
    default: return 'error';
  }
}

function statusText(s) {
  return http.STATUS_CODES[s] || 'Error';
}

// A valid success body for this request (not charged; used by faults).
function faultBaseBody(ctx) {
  if (ctx.prov === LL) {
    const k = ctx.key !== null ? cfg.keys[LL].get(ctx.key) : undefined;
    return llStaticBody(ctx.domain || ACME_DOMAIN, ctx.fields, k ? k.balance : 0);
  }
  return slBody(ctx.slug || DEEPAK_SLUG);
}

function faultObjectBody(ctx, mutate) {
  // Returns JSON text of the success document after mutate(obj) changed the record.
  const doc = JSON.parse(faultBaseBody(ctx));
  mutate(ctx.prov === LL ? doc.data.company : doc.data, doc);
  return JSON.stringify(doc);
}

function rawSocketOf(sock) {
  return sock && sock._parent ? sock._parent : sock;
}

function connSocket(ctx) {
  if (ctx.h2) {
    const s = ctx.req.stream && ctx.req.stream.session;
    return s ? s.socket : null; // proxy; property reads reach the TLS socket
  }
  return ctx.req.socket;
}

// TCP reset (RST) of the connection carrying this request.
function resetConnection(ctx) {
  if (ctx.h2) {
    const session = ctx.req.stream && ctx.req.stream.session;
    if (!session) return;
    const raw = session.socket._parent;
    try { if (raw) raw.resetAndDestroy(); } catch (e) { /* fall through */ }
    session.destroy();
    return;
  }
  const sock = ctx.req.socket;
  const raw = rawSocketOf(sock);
  try { raw.resetAndDestroy(); } catch (e) { /* not a TCP handle */ }
  sock.destroy();
}

// Graceful close (FIN) of this request's connection, or RST_STREAM for an h2 stream.
function abortAfterPartial(ctx, scope) {
  if (ctx.h2) {
    if (scope === 'connection') {
      const session = ctx.req.stream && ctx.req.stream.session;
      if (session) session.destroy();
    } else if (ctx.req.stream) {
      ctx.req.stream.close(NGHTTP2_INTERNAL_ERROR);
    }
    return;
  }
  ctx.req.socket.destroy();
}

function runFault(ctx, f) {
  const p = ctx.prov;
  switch (f.kind) {
    case 'status': {
      const extra = {};
      if (f.retry_after !== null) extra['Retry-After'] = String(f.retry_after);
      if (f.rate_reset_in !== null && p === LL) ctx.rateOverride = Math.ceil(Date.now() / 1000 + f.rate_reset_in);
      sendError(ctx, f.status, f.code || defaultCode(p, f.status),
        'Injected fault: ' + f.status + ' ' + statusText(f.status), extra);
      return;
    }
    case 'reset':
      recStatus(ctx, 'reset');
      if (ctx.h2 && f.scope !== 'connection') { ctx.req.stream.close(NGHTTP2_INTERNAL_ERROR); return; }
      resetConnection(ctx);
      return;
    case 'reset_mid_body':
      recStatus(ctx, 200);
      later(ctx, faultMidBody, f);
      return;
    case 'hang':
      recStatus(ctx, 'hang');
      return; // never answer; 'close' cleans up when the client goes away
    case 'slow_drip':
      recStatus(ctx, 200);
      later(ctx, faultDrip, f);
      return;
    case 'malformed_json':
      send(ctx, 200, '{"data": {"company": {"name": "Acme"' + ' <<garbage>> ]]} ,,\n');
      return;
    case 'truncated_json': {
      const full = Buffer.from(faultBaseBody(ctx));
      send(ctx, 200, full.subarray(0, full.length >> 1));
      return;
    }
    case 'huge_body':
      recStatus(ctx, 200);
      later(ctx, faultHuge, f);
      return;
    case 'invalid_utf8': {
      const txt = faultObjectBody(ctx, (o) => { o.name = (o.name || 'Acme') + '@@BAD@@'; });
      const i = txt.indexOf('@@BAD@@');
      send(ctx, 200, Buffer.concat([Buffer.from(txt.slice(0, i)), Buffer.from([0xc3, 0x28, 0xff, 0xfe]),
        Buffer.from(txt.slice(i + 7))]));
      return;
    }
    case 'nul_escape':
      send(ctx, 200, faultObjectBody(ctx, (o) => { o.name = (o.name || 'Acme') + '\u0000' + 'x'; }));
      return;
    case 'deep_nesting': {
      const txt = faultObjectBody(ctx, (o) => { o.deep = '@@DEEP@@'; });
      const i = txt.indexOf('"@@DEEP@@"');
      send(ctx, 200, txt.slice(0, i) + '['.repeat(f.depth) + ']'.repeat(f.depth) + txt.slice(i + 10));
      return;
    }
    case 'wrong_shape': {
      const b = f.shape === 'company_not_object' ? '{"data":{"company":"Acme"}}'
        : f.shape === 'data_not_object' ? '{"data":[1,2]}' : '{"result":{}}';
      send(ctx, 200, b);
      return;
    }
    case 'redirect': {
      const st = f.status || 302;
      recStatus(ctx, st);
      later(ctx, writeNow, st, errBody('moved', 'Moved to ' + f.location), { Location: f.location });
      return;
    }
    case 'html': {
      const s = f.status || 200;
      const t = s + ' ' + statusText(s);
      const body = '<html>\r\n<head><title>' + t + '</title></head>\r\n<body>\r\n<center><h1>' + t +
        '</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';
      recStatus(ctx, s);
      later(ctx, (c) => {
        try {
          c.res.writeHead(s, baseHeaders(c, 'text/html', Buffer.byteLength(body)));
          c.res.end(body);
        } catch (e) { internalError(e); }
      });
      return;
    }
    default:
      internalError(new Error('unknown fault kind ' + f.kind));
  }
}

function faultMidBody(ctx, f) {
  const full = Buffer.from(faultBaseBody(ctx));
  const half = full.subarray(0, full.length >> 1);
  try {
    ctx.res.writeHead(200, baseHeaders(ctx, 'application/json', full.length));
    ctx.res.write(half, () => { if (!ctx.done) abortAfterPartial(ctx, f.scope); });
  } catch (e) { internalError(e); }
}

function faultDrip(ctx, f) {
  const full = Buffer.from(faultBaseBody(ctx));
  let off = 0;
  const res = ctx.res;
  try { res.writeHead(200, baseHeaders(ctx, 'application/json', full.length)); } catch (e) { internalError(e); return; }
  const step = () => {
    ctx.timer = null;
    if (ctx.done) return;
    const end = Math.min(full.length, off + f.bytes);
    const chunk = full.subarray(off, end);
    off = end;
    if (off >= full.length) { res.end(chunk); return; }
    res.write(chunk);
    ctx.timer = setTimeout(step, f.interval_ms);
  };
  step();
}

const PAD_CHUNK = Buffer.alloc(65536, 0x61); // 'a'

function faultHuge(ctx, f) {
  const mark = '@@PAD@@';
  const txt = faultObjectBody(ctx, (o) => {
    if (ctx.prov === LL) o.description = mark; else o.padding = mark;
  });
  const i = txt.indexOf(mark);
  const pre = Buffer.from(txt.slice(0, i));
  const post = Buffer.from(txt.slice(i + mark.length));
  let pad = f.bytes - pre.length - post.length;
  if (pad < 0) pad = 0;
  const total = pre.length + pad + post.length;
  const res = ctx.res;
  try {
    res.writeHead(200, baseHeaders(ctx, 'application/json', f.content_length ? total : -1));
    res.write(pre);
  } catch (e) { internalError(e); return; }
  const pump = () => {
    if (ctx.done) return;
    while (pad > 0) {
      const n = pad < PAD_CHUNK.length ? pad : PAD_CHUNK.length;
      pad -= n;
      const ok = res.write(n === PAD_CHUNK.length ? PAD_CHUNK : PAD_CHUNK.subarray(0, n));
      if (!ok) { res.once('drain', pump); return; }
    }
    res.end(post);
  };
  pump();
}

// ---------------------------------------------------------------------------
// Request body
// ---------------------------------------------------------------------------

// Keeps what arrived (method, target, every header as sent, body) for
// tests that check what a client really sends; only when capture is on.
function captureRequest(ctx, buf) {
  const req = ctx.req;
  const headers = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  captured.push({
    provider: PNAME[ctx.prov], method: req.method, url: req.url, http_version: req.httpVersion, headers,
    body: buf === null ? null : buf.subarray(0, CAPTURE_BODY_MAX).toString('latin1'),
  });
  while (captured.length > cfg.capture) captured.shift();
}

function readBody(ctx, cb) {
  const req = ctx.req;
  let chunks = null;
  let size = 0;
  let over = false;
  req.on('data', (c) => {
    if (over) return;
    size += c.length;
    if (size > MAX_BODY) { over = true; chunks = null; return; }
    if (chunks === null) chunks = [c]; else chunks.push(c);
  });
  req.on('end', () => {
    if (ctx.done) return;
    if (cfg.capture > 0) captureRequest(ctx, over ? null : chunks === null ? EMPTY : Buffer.concat(chunks));
    try {
      cb(ctx, over ? null : chunks === null ? EMPTY : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), over);
    } catch (e) {
      internalError(e);
      try { if (!ctx.res.headersSent) { ctx.res.writeHead(500); ctx.res.end(); } } catch (e2) { /* ignore */ }
    }
  });
  req.on('error', () => {});
}

// ---------------------------------------------------------------------------
// LeadLex: POST /functions/v1/api-gateway/v1/enrich/company
// ---------------------------------------------------------------------------

const ALLOW_POST = { Allow: 'POST' };
const ALLOW_GET = { Allow: 'GET' };

function handleLeadlex(req, res, qs, h2) {
  const ctx = begin(LL, req, res, h2);
  ctx.qs = qs;
  readBody(ctx, leadlexBody);
}

function leadlexBody(ctx, buf, over) {
  const req = ctx.req;
  if (req.method !== 'POST') {
    return sendError(ctx, 405, 'method_not_allowed', 'Method ' + req.method + ' not allowed; use POST', ALLOW_POST);
  }
  const qs = ctx.qs;
  if (qs !== '' && keyInQuery(qs)) {
    led.keysInUrl++;
    return sendError(ctx, 400, 'validation_error', 'API keys must be sent in the Authorization header, never in the URL');
  }
  // --- auth
  const auth = req.headers.authorization;
  const m = typeof auth === 'string' ? BEARER_RE.exec(auth) : null;
  const krec = m === null ? undefined : cfg.keys[LL].get(m[1]);
  if (krec === undefined) return sendError(ctx, 401, 'invalid_key', 'Invalid or expired API key');
  ctx.key = m[1];
  if (!krec.write) return sendError(ctx, 403, 'insufficient_permissions', 'API key lacks the write:enrich permission');
  // --- validation
  if (qs !== '') return sendError(ctx, 400, 'validation_error', 'Query parameters are not accepted');
  if (over) return sendError(ctx, 400, 'validation_error', 'Request body too large');
  const ct = req.headers['content-type'];
  const cm = typeof ct === 'string' ? CT_JSON_RE.exec(ct) : null;
  if (cm === null) return sendError(ctx, 400, 'validation_error', 'Content-Type must be application/json');
  if (cm[1] !== undefined) {
    const cs = CHARSET_RE.exec(cm[1]);
    if (cs !== null && cs[1].toLowerCase() !== 'utf-8') return sendError(ctx, 400, 'validation_error', 'Only the utf-8 charset is accepted');
  }
  let body;
  try {
    body = JSON.parse(utf8.decode(buf));
  } catch (e) {
    return sendError(ctx, 400, 'validation_error', 'Request body is not valid UTF-8 JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return sendError(ctx, 400, 'validation_error', 'Request body must be a JSON object');
  }
  // ledger: every authenticated request whose input we can read, valid or not
  const rd = body.domain;
  const rc = body.company_id;
  const input = typeof rd === 'string' ? rd
    : typeof rc === 'string' ? (knownIds.get(rc) || rc) : null;
  if (input !== null) { ctx.input = input; bump(led.reqByInput[LL], input, 1); }
  let domain;
  let companyId;
  let fields = null;
  let overwrite = false;
  for (const k in body) {
    const v = body[k];
    switch (k) {
      case 'domain':
        if (typeof v !== 'string') return sendError(ctx, 400, 'validation_error', 'domain must be a string');
        domain = v;
        break;
      case 'company_id':
        if (typeof v !== 'string') return sendError(ctx, 400, 'validation_error', 'company_id must be a string');
        companyId = v;
        break;
      case 'fields':
        if (!Array.isArray(v)) return sendError(ctx, 400, 'validation_error', 'fields must be an array');
        for (let i = 0; i < v.length; i++) {
          if (typeof v[i] !== 'string' || !LL_FIELD_SET.has(v[i])) {
            return sendError(ctx, 400, 'validation_error', 'Unknown field in fields: ' + JSON.stringify(v[i]));
          }
        }
        fields = v;
        break;
      case 'overwrite':
        if (typeof v !== 'boolean') return sendError(ctx, 400, 'validation_error', 'overwrite must be a boolean');
        overwrite = v;
        break;
      default:
        return sendError(ctx, 400, 'validation_error', 'Unknown body member ' + JSON.stringify(k));
    }
  }
  if (domain === undefined && companyId === undefined) {
    return sendError(ctx, 400, 'validation_error', 'Supply either company_id or domain');
  }
  if (domain !== undefined && companyId !== undefined) {
    return sendError(ctx, 400, 'validation_error', 'Supply either company_id or domain, not both');
  }
  if (domain !== undefined && !DOMAIN_RE.test(domain)) {
    return sendError(ctx, 400, 'validation_error', 'domain must be a canonical lower-case domain name, got ' + JSON.stringify(domain));
  }
  if (companyId !== undefined && !UUID_RE.test(companyId) && companyId !== ACME_ID) {
    return sendError(ctx, 400, 'validation_error', 'company_id must be a UUID');
  }
  const idemHdr = req.headers['idempotency-key'];
  let idem = null;
  if (idemHdr !== undefined) {
    if (typeof idemHdr !== 'string' || !UUID_RE.test(idemHdr)) {
      return sendError(ctx, 400, 'validation_error', 'Idempotency-Key must be a UUID');
    }
    idem = idemHdr.toLowerCase();
  }
  ctx.domain = domain !== undefined ? domain : (knownIds.get(companyId) || null);
  ctx.fields = fields;
  // --- faults (after auth and validation, before rate limit and balance)
  const fault = pickFault(LL, input, companyId);
  if (fault !== null && !fault.after_charge) return runFault(ctx, fault);
  // --- rate limit
  if (!admit(ctx)) return;
  // --- idempotency
  let canon = null;
  let idemKey = null;
  if (idem !== null) {
    idemKey = ctx.key + '\n' + idem;
    canon = JSON.stringify([companyId === undefined ? null : companyId, domain === undefined ? null : domain,
      fields, overwrite]);
    const r = idemStore.get(idemKey);
    if (r !== undefined) {
      if (r.expires <= Date.now()) {
        idemStore.delete(idemKey);
      } else if (r.canon !== canon) {
        return sendError(ctx, 400, 'validation_error', 'Idempotency-Key was already used with a different request body');
      } else {
        led.replays++;
        ctx.notBefore = r.readyAt;
        if (fault !== null) return runFault(ctx, fault);
        return send(ctx, r.status, r.body, { 'Idempotent-Replayed': 'true' });
      }
    }
  }
  // --- balance
  if (krec.balance <= 0) {
    if (fault !== null) return runFault(ctx, fault);
    return sendError(ctx, 402, 'insufficient_credits', 'Workspace credit balance is exhausted');
  }
  // --- match
  let status;
  let out;
  if (companyId !== undefined && !knownIds.has(companyId)) {
    status = 404;
    out = errBody('not_found', 'company_id does not exist in this workspace');
  } else {
    const d = ctx.domain;
    if (d.startsWith('nomatch')) {
      status = 409;
      out = errBody('no_match', 'Upstream providers returned no data for the input');
    } else {
      krec.balance -= 1;
      bump(led.charged[LL], ctx.key, 1);
      bump(led.chargedInputs[LL], d, 1);
      out = llBody(ctx.key, d, fields, overwrite, krec.balance);
      knownIds.set(llEntry(d).company.id, d);
      status = 200;
    }
  }
  if (idemKey !== null) {
    idemStore.set(idemKey, { canon, status, body: out, readyAt: dueAt(ctx),
      expires: Date.now() + IDEM_TTL_MS });
  }
  if (fault !== null) return runFault(ctx, fault);
  send(ctx, status, out);
}

// ---------------------------------------------------------------------------
// Slintel: GET /v2.0/lead/enrich?linkedin_url=...
// ---------------------------------------------------------------------------

function handleSlintel(req, res, qs, h2) {
  const ctx = begin(SL, req, res, h2);
  ctx.qs = qs;
  readBody(ctx, slintelBody);
}

// Returns an error message, or null with ctx.slug / ctx.input set.
function slParse(ctx, qs) {
  if (qs === '') return 'linkedin_url query parameter is required';
  const sp = new URLSearchParams(qs);
  let raw = null;
  let n = 0;
  for (const [k, v] of sp) {
    if (k !== 'linkedin_url') return 'Unknown query parameter ' + JSON.stringify(k);
    n++;
    raw = v;
  }
  if (n !== 1) return 'linkedin_url must be given exactly once';
  ctx.input = raw;
  ctx.rawUrl = raw;
  if (raw === '') return 'linkedin_url is empty';
  if (CTRL_CHARS_RE.test(raw)) return 'linkedin_url contains whitespace or control characters';
  if (!SL_URL_START_RE.test(raw)) return 'linkedin_url must be an http(s) URL';
  if (SL_AUTH_BAD_RE.test(raw)) return 'linkedin_url must not contain userinfo or a port';
  let u;
  try { u = new URL(raw); } catch (e) { return 'linkedin_url is not a valid URL'; }
  const host = u.hostname;
  if (host !== 'linkedin.com' && !host.endsWith('.linkedin.com')) return 'linkedin_url must be on linkedin.com';
  if (raw.indexOf('?') >= 0 || raw.indexOf('#') >= 0) return 'linkedin_url must not carry a query or fragment';
  const m = IN_PATH_RE.exec(u.pathname);
  if (m === null) return 'linkedin_url path must be /in/<slug>';
  let slug;
  try { slug = decodeURIComponent(m[1]).toLowerCase(); } catch (e) { return 'linkedin_url slug is not valid percent-encoding'; }
  if (slug.trim() === '' || slug.indexOf('/') >= 0) return 'linkedin_url slug is invalid';
  ctx.slug = slug;
  ctx.input = slug;
  return null;
}

function slintelBody(ctx, buf, over) {
  const req = ctx.req;
  if (req.method !== 'GET') {
    return sendError(ctx, 405, 'method_not_allowed', 'Method ' + req.method + ' not allowed; use GET', ALLOW_GET);
  }
  const qs = ctx.qs;
  if (qs !== '' && keyInQuery(qs)) {
    led.keysInUrl++;
    return sendError(ctx, 400, 'validation_error', 'API keys must be sent in the x-api-key header, never in the URL');
  }
  const key = req.headers['x-api-key'];
  const krec = typeof key === 'string' ? cfg.keys[SL].get(key) : undefined;
  if (krec === undefined) return sendError(ctx, 401, 'unauthorized', 'Missing or invalid x-api-key');
  ctx.key = key;
  const err = slParse(ctx, qs);
  if (ctx.input !== null) bump(led.reqByInput[SL], ctx.input, 1);
  if (err !== null) return sendError(ctx, 400, 'validation_error', err);
  const fault = pickFault(SL, ctx.rawUrl, ctx.slug);
  if (fault !== null && !fault.after_charge) return runFault(ctx, fault);
  if (!admit(ctx)) return;
  if (krec.balance <= 0) {
    if (fault !== null) return runFault(ctx, fault);
    return sendError(ctx, 402, 'insufficient_credits', 'Credit balance is exhausted');
  }
  const slug = ctx.slug;
  if (slug.startsWith('nomatch')) {
    if (fault !== null) return runFault(ctx, fault);
    return sendError(ctx, 404, 'not_found', 'No lead found for this linkedin_url');
  }
  krec.balance -= 1;
  bump(led.charged[SL], key, 1);
  bump(led.chargedInputs[SL], slug, 1);
  const out = slug.startsWith('empty') ? EMPTY_LEAD_JSON : slBody(slug);
  if (fault !== null) return runFault(ctx, fault);
  send(ctx, 200, out);
}

// ---------------------------------------------------------------------------
// Control and ledger
// ---------------------------------------------------------------------------

function plainJson(res, status, obj, extra) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  const h = { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
  if (extra) Object.assign(h, extra);
  try { res.writeHead(status, h); res.end(body); } catch (e) { internalError(e); }
}

function mapObj(m) {
  const o = {};
  for (const [k, v] of m) o[k] = v;
  return o;
}

function ledgerJson() {
  const two = (f) => ({ leadlex: f(0), slintel: f(1) });
  const bal = (p) => {
    const o = {};
    for (const [k, v] of cfg.keys[p]) o[k] = v.balance;
    return o;
  };
  const sum = (m) => { let s = 0; for (const v of m.values()) s += v; return s; };
  return {
    requests: two((p) => led.requests[p]),
    other_requests: led.other,
    by_status: two((p) => Object.assign({}, led.byStatus[p])),
    charged: two((p) => mapObj(led.charged[p])),
    charged_total: two((p) => sum(led.charged[p])),
    charged_inputs: two((p) => mapObj(led.chargedInputs[p])),
    requests_by_input: two((p) => mapObj(led.reqByInput[p])),
    idempotent_replays: led.replays,
    in_flight: two((p) => inflight[p]),
    peak_concurrency: { leadlex: led.peak[0], slintel: led.peak[1], total: led.peakTotal },
    connections: Object.assign({}, led.conns),
    balances: two(bal),
    faults_applied: two((p) => Object.assign({}, led.faults[p])),
    keys_in_url: led.keysInUrl,
    internal_errors: led.internalErrors,
  };
}

function faultJson(f) {
  const o = { id: f.id, provider: f.provider === ANY ? 'any' : PNAME[f.provider], kind: f.kind,
    remaining: f.remaining < 0 ? null : f.remaining, applied: f.applied, match: f.match };
  for (const k of ['status', 'code', 'retry_after', 'rate_reset_in', 'bytes', 'interval_ms',
    'content_length', 'depth', 'shape', 'scope', 'after_charge', 'location']) {
    if (f[k] !== null && f[k] !== undefined) o[k] = f[k];
  }
  return o;
}

function configJson() {
  const keys = (p) => {
    const o = {};
    for (const [k, v] of cfg.keys[p]) o[k] = p === LL ? { permissions: v.permissions, balance: v.balance } : { balance: v.balance };
    return o;
  };
  const rate = (p) => {
    const r = cfg.rate[p];
    return r === null ? null : { per_second: r.perSecond, max_concurrent: r.maxConcurrent, retry_after: r.retryAfter,
      window: r.fixed ? 'fixed' : 'sliding' };
  };
  const quota = (p) => {
    const q = cfg.quota[p];
    quotaRefresh(q, Date.now());
    return { limit: q.limit, period_s: q.periodMs === null ? null : q.periodMs / 1000,
      reset_at: Math.ceil(q.nextReset / 1000), used: mapObj(q.used) };
  };
  const two = (f) => ({ leadlex: f(0), slintel: f(1) });
  return {
    keys: two(keys),
    latency_ms: two((p) => cfg.latency[p]),
    latency_jitter_ms: two((p) => cfg.jitter[p]),
    rate_limit: two(rate),
    daily_quota: two(quota),
    faults: cfg.faults.map(faultJson),
    idempotency_records: idemStore.size,
    known_company_ids: knownIds.size,
    workspace_records: workspace.size,
    data_version: dataVersion,
    capture: cfg.capture,
  };
}

class ControlError extends Error {}
function cerr(msg) { throw new ControlError(msg); }

function isObj(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
function isNonNegInt(v) { return typeof v === 'number' && Number.isInteger(v) && v >= 0; }
function isNonNegNum(v) { return typeof v === 'number' && Number.isFinite(v) && v >= 0; }

function provIndex(name, allowAny) {
  if (name === 'leadlex') return LL;
  if (name === 'slintel') return SL;
  if (allowAny && name === 'any') return ANY;
  return cerr('unknown provider ' + JSON.stringify(name));
}

// "x": number (both providers) or {"leadlex": n, "slintel": n}
function perProvNumbers(v, what) {
  const out = [undefined, undefined];
  if (typeof v === 'number') {
    if (!isNonNegNum(v)) cerr(what + ' must be a non-negative number');
    out[0] = out[1] = v;
    return out;
  }
  if (!isObj(v)) cerr(what + ' must be a number or an object keyed by provider');
  for (const k in v) {
    const p = provIndex(k, false);
    if (!isNonNegNum(v[k])) cerr(what + '.' + k + ' must be a non-negative number');
    out[p] = v[k];
  }
  return out;
}

function parseFault(v) {
  if (!isObj(v)) cerr('a fault must be an object');
  const allowed = new Set(['provider', 'kind', 'count', 'match', 'status', 'code', 'retry_after',
    'rate_reset_in', 'bytes', 'interval_ms', 'content_length', 'depth', 'shape', 'scope', 'after_charge',
    'location']);
  for (const k in v) if (!allowed.has(k)) cerr('unknown fault member ' + JSON.stringify(k));
  if (!FAULT_KINDS.has(v.kind)) cerr('unknown fault kind ' + JSON.stringify(v.kind));
  const f = {
    id: 0, provider: v.provider === undefined ? ANY : provIndex(v.provider, true), kind: v.kind,
    remaining: -1, applied: 0, match: null, status: null, code: null, retry_after: null,
    rate_reset_in: null, bytes: null, interval_ms: null, content_length: null, depth: null,
    shape: null, scope: null, after_charge: false, location: null,
  };
  if (v.count !== undefined && v.count !== null) {
    if (!Number.isInteger(v.count) || v.count < 1) cerr('fault count must be a positive integer');
    f.remaining = v.count;
  }
  if (v.match !== undefined && v.match !== null) {
    if (typeof v.match !== 'string' || v.match === '') cerr('fault match must be a non-empty string');
    f.match = v.match;
  }
  if (v.after_charge !== undefined) {
    if (typeof v.after_charge !== 'boolean') cerr('after_charge must be a boolean');
    f.after_charge = v.after_charge;
  }
  if (v.scope !== undefined) {
    if (v.scope !== 'stream' && v.scope !== 'connection') cerr('scope must be "stream" or "connection"');
    f.scope = v.scope;
  }
  if (f.kind === 'status') {
    if (!Number.isInteger(v.status) || v.status < 400 || v.status > 599) cerr('status fault needs "status" 400-599');
    f.status = v.status;
    if (v.code !== undefined) { if (typeof v.code !== 'string' || !v.code) cerr('code must be a string'); f.code = v.code; }
    if (v.retry_after !== undefined) { if (!isNonNegInt(v.retry_after)) cerr('retry_after must be a non-negative integer'); f.retry_after = v.retry_after; }
    if (v.rate_reset_in !== undefined) { if (!isNonNegNum(v.rate_reset_in)) cerr('rate_reset_in must be a non-negative number'); f.rate_reset_in = v.rate_reset_in; }
  } else if (f.kind === 'html') {
    if (v.status !== undefined) {
      if (!Number.isInteger(v.status) || v.status < 200 || v.status > 599) cerr('html status must be 200-599');
      f.status = v.status;
    }
  }
  if (f.kind === 'redirect') {
    if (v.status !== undefined) {
      if (![301, 302, 303, 307, 308].includes(v.status)) cerr('redirect status must be 301, 302, 303, 307 or 308');
      f.status = v.status;
    }
    if (typeof v.location !== 'string' || v.location === '' || /[\r\n]/.test(v.location)) cerr('redirect fault needs "location", a one-line string');
    f.location = v.location;
  } else if (v.location !== undefined) {
    cerr('location is only for redirect faults');
  }
  if (f.kind === 'slow_drip') {
    f.bytes = v.bytes === undefined ? 1 : v.bytes;
    f.interval_ms = v.interval_ms === undefined ? 100 : v.interval_ms;
    if (!Number.isInteger(f.bytes) || f.bytes < 1) cerr('bytes must be a positive integer');
    if (!isNonNegNum(f.interval_ms)) cerr('interval_ms must be a non-negative number');
  }
  if (f.kind === 'huge_body') {
    f.bytes = v.bytes === undefined ? 20 * 1024 * 1024 : v.bytes;
    if (!Number.isInteger(f.bytes) || f.bytes < 1 || f.bytes > 4 * 1024 * 1024 * 1024) cerr('bytes must be a positive integer (<= 4 GiB)');
    f.content_length = v.content_length === true;
    if (v.content_length !== undefined && typeof v.content_length !== 'boolean') cerr('content_length must be a boolean');
  }
  if (f.kind === 'deep_nesting') {
    f.depth = v.depth === undefined ? 10000 : v.depth;
    if (!Number.isInteger(f.depth) || f.depth < 1 || f.depth > 10000000) cerr('depth must be an integer 1..10000000');
  }
  if (f.kind === 'wrong_shape') {
    f.shape = v.shape === undefined ? 'no_data' : v.shape;
    if (f.shape !== 'no_data' && f.shape !== 'company_not_object' && f.shape !== 'data_not_object') cerr('unknown shape ' + JSON.stringify(f.shape));
  }
  return f;
}

function parseRate(v, pname) {
  if (v === null) return null;
  if (!isObj(v)) cerr('rate_limit.' + pname + ' must be an object or null');
  for (const k in v) if (k !== 'per_second' && k !== 'max_concurrent' && k !== 'retry_after' && k !== 'window') cerr('unknown rate_limit member ' + JSON.stringify(k));
  const r = { perSecond: null, maxConcurrent: null, retryAfter: true, ring: null, pos: 0,
    fixed: false, winIdx: -1, winUsed: 0 };
  if (v.window !== undefined) {
    if (v.window !== 'sliding' && v.window !== 'fixed') cerr('window must be "sliding" or "fixed"');
    r.fixed = v.window === 'fixed';
  }
  if (v.per_second !== undefined && v.per_second !== null) {
    if (!isNonNegInt(v.per_second) || v.per_second > 1000000) cerr('per_second must be an integer 0..1000000');
    r.perSecond = v.per_second;
    if (r.perSecond > 0) r.ring = new Float64Array(r.perSecond).fill(-Infinity);
  }
  if (v.max_concurrent !== undefined && v.max_concurrent !== null) {
    if (!isNonNegInt(v.max_concurrent)) cerr('max_concurrent must be a non-negative integer');
    r.maxConcurrent = v.max_concurrent;
  }
  if (v.retry_after !== undefined) {
    if (typeof v.retry_after !== 'boolean') cerr('retry_after must be a boolean');
    r.retryAfter = v.retry_after;
  }
  if (r.fixed && (r.perSecond === null || pname !== 'leadlex')) cerr('window "fixed" needs per_second and is for leadlex');
  if (r.perSecond === null && r.maxConcurrent === null) return null;
  return r;
}

const CONTROL_MEMBERS = new Set(['reset', 'latency_ms', 'latency_jitter_ms', 'balance', 'keys',
  'rate_limit', 'daily_quota', 'faults', 'add_fault', 'capture', 'data_version']);

// Validate everything first, then apply: a bad request changes nothing.
function applyControl(c) {
  if (!isObj(c)) cerr('control body must be a JSON object');
  for (const k in c) if (!CONTROL_MEMBERS.has(k)) cerr('unknown control member ' + JSON.stringify(k));
  const ops = [];
  const now = Date.now();
  if (c.reset !== undefined) {
    if (typeof c.reset !== 'boolean') cerr('reset must be a boolean');
    if (c.reset) {
      ops.push(() => {
        cfg = defaultConfig();
        idemStore = new Map();
        knownIds = new Map();
        workspace = new Map();
        dataVersion = 0;
        led = freshLedger();
        captured = [];
      });
    }
  }
  if (c.keys !== undefined) {
    if (!isObj(c.keys)) cerr('keys must be an object');
    for (const pn in c.keys) {
      const p = provIndex(pn, false);
      const ks = c.keys[pn];
      if (!isObj(ks)) cerr('keys.' + pn + ' must be an object');
      for (const name in ks) {
        const spec = ks[name];
        if (name === '' || /[\s,]/.test(name)) cerr('bad key name ' + JSON.stringify(name));
        if (spec === null) { ops.push(() => cfg.keys[p].delete(name)); continue; }
        if (!isObj(spec)) cerr('key spec must be an object or null');
        for (const m in spec) if (m !== 'permissions' && m !== 'balance') cerr('unknown key member ' + JSON.stringify(m));
        let perms = p === LL ? ['write:enrich'] : [];
        if (spec.permissions !== undefined) {
          if (!Array.isArray(spec.permissions) || spec.permissions.some((x) => typeof x !== 'string')) cerr('permissions must be an array of strings');
          perms = spec.permissions.slice();
        }
        let bal = DEFAULT_BALANCE;
        if (spec.balance !== undefined) { if (!isNonNegInt(spec.balance)) cerr('balance must be a non-negative integer'); bal = spec.balance; }
        ops.push(() => cfg.keys[p].set(name, newKey(p, perms, bal)));
      }
    }
  }
  if (c.balance !== undefined) {
    if (!isObj(c.balance)) cerr('balance must be an object');
    for (const k in c.balance) {
      const v = c.balance[k];
      if (k === 'leadlex' || k === 'slintel') {
        const p = provIndex(k, false);
        if (!isObj(v)) cerr('balance.' + k + ' must be an object of key: balance');
        for (const kk in v) {
          if (!isNonNegInt(v[kk])) cerr('balance must be a non-negative integer');
          const bal = v[kk];
          ops.push(() => {
            const r = cfg.keys[p].get(kk);
            if (r === undefined) cerr('unknown ' + k + ' key ' + JSON.stringify(kk));
            r.balance = bal;
          });
        }
        continue;
      }
      if (!isNonNegInt(v)) cerr('balance must be a non-negative integer');
      ops.push(() => {
        let found = false;
        for (let p = 0; p < 2; p++) {
          const r = cfg.keys[p].get(k);
          if (r !== undefined) { r.balance = v; found = true; }
        }
        if (!found) cerr('unknown key ' + JSON.stringify(k));
      });
    }
  }
  if (c.latency_ms !== undefined) {
    const v = perProvNumbers(c.latency_ms, 'latency_ms');
    ops.push(() => { for (let p = 0; p < 2; p++) if (v[p] !== undefined) cfg.latency[p] = v[p]; });
  }
  if (c.latency_jitter_ms !== undefined) {
    const v = perProvNumbers(c.latency_jitter_ms, 'latency_jitter_ms');
    ops.push(() => { for (let p = 0; p < 2; p++) if (v[p] !== undefined) cfg.jitter[p] = v[p]; });
  }
  if (c.rate_limit !== undefined) {
    if (c.rate_limit === null) {
      ops.push(() => { cfg.rate = [null, null]; });
    } else {
      if (!isObj(c.rate_limit)) cerr('rate_limit must be an object or null');
      for (const pn in c.rate_limit) {
        const p = provIndex(pn, false);
        const r = parseRate(c.rate_limit[pn], pn);
        ops.push(() => { cfg.rate[p] = r; });
      }
    }
  }
  if (c.daily_quota !== undefined) {
    if (!isObj(c.daily_quota)) cerr('daily_quota must be an object');
    for (const pn in c.daily_quota) {
      const p = provIndex(pn, false);
      const v = c.daily_quota[pn];
      let limit = DEFAULT_QUOTA;
      let period = null;
      if (v === null) {
        // back to the default
      } else if (typeof v === 'number') {
        if (!isNonNegInt(v)) cerr('daily_quota must be a non-negative integer');
        limit = v;
      } else if (isObj(v)) {
        for (const k in v) if (k !== 'limit' && k !== 'period_s') cerr('unknown daily_quota member ' + JSON.stringify(k));
        if (!isNonNegInt(v.limit)) cerr('daily_quota limit must be a non-negative integer');
        limit = v.limit;
        if (v.period_s !== undefined && v.period_s !== null) {
          if (!isNonNegNum(v.period_s) || v.period_s < 0.001) cerr('period_s must be a positive number');
          period = v.period_s * 1000;
        }
      } else {
        cerr('daily_quota.' + pn + ' must be a number, an object or null');
      }
      ops.push(() => { cfg.quota[p] = newQuota(limit, period, now); });
    }
  }
  if (c.faults !== undefined) {
    if (!Array.isArray(c.faults)) cerr('faults must be an array');
    const fl = c.faults.map(parseFault);
    ops.push(() => { for (const f of fl) f.id = ++faultSeq; cfg.faults = fl; });
  }
  if (c.add_fault !== undefined) {
    const f = parseFault(c.add_fault);
    ops.push(() => { f.id = ++faultSeq; cfg.faults.push(f); });
  }
  if (c.capture !== undefined) {
    if (!isNonNegInt(c.capture) || c.capture > MAX_CAPTURE) cerr('capture must be an integer 0..' + MAX_CAPTURE);
    ops.push(() => { cfg.capture = c.capture; captured = []; });
  }
  if (c.data_version !== undefined) {
    if (!isNonNegInt(c.data_version) || c.data_version > 1000000) cerr('data_version must be an integer 0..1000000');
    ops.push(() => { dataVersion = c.data_version; });
  }
  // Unknown keys in "balance" are detected while applying; check them first.
  if (c.balance !== undefined) {
    const pending = new Set();
    if (c.keys !== undefined) for (const pn in c.keys) for (const name in c.keys[pn]) if (c.keys[pn][name] !== null) pending.add(name);
    const resetting = c.reset === true;
    const defaults = defaultConfig();
    for (const k in c.balance) {
      const names = (k === 'leadlex' || k === 'slintel') ? Object.keys(c.balance[k]).map((n) => [provIndex(k, false), n]) : [[-1, k]];
      for (const [p, n] of names) {
        const src = resetting ? defaults.keys : cfg.keys;
        const exists = pending.has(n) || (p >= 0 ? src[p].has(n) : (src[0].has(n) || src[1].has(n)));
        if (!exists) cerr('unknown key ' + JSON.stringify(n) + ' in balance');
      }
    }
  }
  for (const op of ops) op();
}

function handleControl(req, res, path) {
  const method = req.method;
  if (path === '/_ledger') {
    if (method !== 'GET') return plainJson(res, 405, errBody('method_not_allowed', 'use GET'), ALLOW_GET);
    return plainJson(res, 200, ledgerJson());
  }
  if (path === '/_captured') {
    if (method !== 'GET') return plainJson(res, 405, errBody('method_not_allowed', 'use GET'), ALLOW_GET);
    return plainJson(res, 200, { capture: cfg.capture, requests: captured });
  }
  if (path === '/_health') {
    const m = process.memoryUsage();
    return plainJson(res, 200, { ok: true, pid: process.pid, uptime_s: Math.round(process.uptime()),
      rss: m.rss, heap_used: m.heapUsed });
  }
  if (path === '/_ledger/reset') {
    if (method !== 'POST') return plainJson(res, 405, errBody('method_not_allowed', 'use POST'), ALLOW_POST);
    req.resume();
    led = freshLedger();
    return plainJson(res, 200, { ok: true });
  }
  if (path === '/_control') {
    if (method === 'GET') return plainJson(res, 200, configJson());
    if (method !== 'POST') return plainJson(res, 405, errBody('method_not_allowed', 'use GET or POST'), { Allow: 'GET, POST' });
    const chunks = [];
    let size = 0;
    req.on('data', (c) => { size += c.length; if (size <= 16 * MAX_BODY) chunks.push(c); });
    req.on('error', () => {});
    req.on('end', () => {
      let c;
      try {
        c = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return plainJson(res, 400, errBody('bad_control', 'body is not valid JSON'));
      }
      try {
        applyControl(c);
      } catch (e) {
        if (e instanceof ControlError) return plainJson(res, 400, errBody('bad_control', e.message));
        internalError(e);
        return plainJson(res, 500, errBody('internal_error', String(e)));
      }
      plainJson(res, 200, { ok: true, config: configJson() });
    });
    return;
  }
  plainJson(res, 404, errBody('not_found_path', 'No such path: ' + path));
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

function makeHandler() {
  return function onRequest(req, res) {
    const url = req.url;
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const qs = q < 0 ? '' : url.slice(q + 1);
    const h2 = req.httpVersionMajor === 2;
    if (path === LL_PATH) return handleLeadlex(req, res, qs, h2);
    if (path === SL_PATH) return handleSlintel(req, res, qs, h2);
    if (path.charCodeAt(1) === 95 /* '_' */) return handleControl(req, res, path);
    led.other++;
    req.resume();
    const body = errBody('not_found_path', 'No such path: ' + path);
    const h = { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
    if (path.startsWith(LL_PREFIX)) {
      llHeaders({ key: null, rateOverride: null }, h);
    }
    try { res.writeHead(404, h); res.end(body); } catch (e) { internalError(e); }
  };
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve(server.address().port);
    });
  });
}

function secureServer(certFile, keyFile, handler, wrong) {
  const s = http2.createSecureServer({
    allowHTTP1: true,
    cert: fs.readFileSync(certFile),
    key: fs.readFileSync(keyFile),
    settings: { maxConcurrentStreams: 1000 },
    maxSessionMemory: 256,
  }, handler);
  s.keepAliveTimeout = 120000; // for HTTP/1.1 over TLS
  s.requestTimeout = 0;
  s.on('connection', () => { led.conns.https++; if (wrong) led.conns.wrong_host++; });
  s.on('session', (session) => {
    led.conns.h2_sessions++;
    session.on('error', () => {});
  });
  s.on('sessionError', () => {});
  s.on('tlsClientError', () => {});
  s.on('clientError', (err, socket) => { try { socket.destroy(); } catch (e) { /* ignore */ } });
  return s;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const handler = makeHandler();

  const plain = http.createServer({ keepAliveTimeout: 120000 }, handler);
  plain.keepAliveTimeout = 120000;
  plain.headersTimeout = 125000;
  plain.requestTimeout = 0;
  plain.maxRequestsPerSocket = 0;
  plain.on('connection', (sock) => { led.conns.http++; sock.setNoDelay(true); });
  plain.on('clientError', (err, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return; }
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });

  const secure = secureServer(o.cert, o.key, handler, false);
  const ports = { http: 0, https: 0, wrong_host: null, pid: process.pid };
  ports.http = await listen(plain, o.httpPort);
  ports.https = await listen(secure, o.httpsPort);
  if (o.wrongPort !== null) {
    const wrong = secureServer(o.wrongCert, o.wrongKey, handler, true);
    ports.wrong_host = await listen(wrong, o.wrongPort);
  }

  const shutdown = () => {
    if (o.portFile) {
      try {
        const cur = JSON.parse(fs.readFileSync(o.portFile, 'utf8'));
        if (cur.pid === process.pid) fs.unlinkSync(o.portFile);
      } catch (e) { /* ignore */ }
    }
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('SIGHUP', shutdown);

  if (o.portFile) {
    const tmp = o.portFile + '.tmp.' + process.pid;
    fs.writeFileSync(tmp, JSON.stringify(ports) + '\n');
    fs.renameSync(tmp, o.portFile);
  }
  process.stdout.write('emulator ready http=' + ports.http + ' https=' + ports.https + '\n');
}

process.on('uncaughtException', (e) => {
  // Keep the instrument alive for the rest of a test run, but make it visible:
  // the ledger's internal_errors counts these and the selftest asserts 0.
  internalError(e);
});

main().catch((e) => {
  process.stderr.write('emulator: ' + (e && e.stack || e) + '\n');
  process.exit(1);
});
