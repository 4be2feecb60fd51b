--
-- normalize: enrich.normalize_domain() and enrich.normalize_linkedin_url()
--
-- The extension is created by an earlier test.  Inputs are listed in tables;
-- an invalid input shows the SQLSTATE and detail it raised, so that one row
-- does not stop the others.  The input is the last column of each result.
--

-- The result of normalize_domain, or the SQLSTATE and detail it raised.
CREATE FUNCTION pg_temp.try_domain(input text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    RETURN 'no error: ' || enrich.normalize_domain(input);
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || detail;
END
$$;

-- The result of normalize_linkedin_url, or the SQLSTATE and detail it raised.
CREATE FUNCTION pg_temp.try_linkedin(input text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    RETURN 'no error: ' || enrich.normalize_linkedin_url(input);
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || detail;
END
$$;

-- An input as shown below: long ones cut, \n \r \t written as escapes.
CREATE FUNCTION pg_temp.shown(input text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(s) > 60
                THEN left(s, 30) || '... (' || length(input) || ' characters)'
                ELSE s END
    FROM (SELECT replace(replace(replace(input, E'\n', '\n'), E'\r', '\r'),
                         E'\t', '\t') AS s) t
$$;

-- Both are IMMUTABLE, PARALLEL SAFE and STRICT.
SELECT proname, provolatile, proparallel, proisstrict,
       pg_get_function_identity_arguments(oid) AS args,
       prorettype::regtype AS returns
FROM pg_proc
WHERE pronamespace = 'enrich'::regnamespace
  AND proname IN ('normalize_domain', 'normalize_linkedin_url')
ORDER BY proname;

-- STRICT: NULL in, NULL out.
SELECT enrich.normalize_domain(NULL) IS NULL AS domain_null,
       enrich.normalize_linkedin_url(NULL) IS NULL AS linkedin_null;

--
-- Domains
--

-- The examples of the contract.
SELECT enrich.normalize_domain('HTTPS://WWW.Blog.Acme.co.uk:443/about?x=1');
SELECT enrich.normalize_domain('münchen.de');
SELECT enrich.normalize_domain('jane@acme.com');

-- Valid domains: schemes, case, ports, paths, userinfo, e-mail addresses,
-- trailing dots, multi-part and private public suffixes, IDN.
SELECT enrich.normalize_domain(input), input
FROM unnest(ARRAY[
    'acme.com',
    'ACME.COM',
    'www.acme.com',
    'http://acme.com',
    'https://www.acme.com/',
    'HTTP://WWW.ACME.COM/About-Us/Team?utm_source=x#contact',
    'acme.com/path/to/page.html',
    'www.acme.com:8080',
    'acme.com?ref=home',
    'acme.com#pricing',
    'http://user:secret@www.acme.com:8443/login',
    'ftp://files.acme.com/pub/',
    'https://acme.com:/',
    'acme.com.',
    'WWW.ACME.CO.UK.',
    'jane@acme.com',
    'Jane.Doe+news@Acme.COM',
    'mailto:jane@acme.com',
    'MAILTO:jane@acme.com?subject=Hello',
    'http://ac%6De.com/',
    'blog.shop.acme.com.au',
    'acme.com.au',
    'www.hmrc.gov.uk',
    'www.gov.uk',
    'www.tax.service.gov.uk',
    'www.lincoln.k12.ca.us',
    'www.city.kawasaki.jp',
    'jane.github.io',
    'www.jane.github.io',
    'acme-store.myshopify.com',
    'a.b.c.d.acme.io',
    'web.archive.org',
    'acme-corp.co',
    '3m.com',
    'ab--cd.com',
    'münchen.de',
    'MÜNCHEN.DE',
    'https://www.München.de/rathaus',
    'xn--mnchen-3ya.de',
    'XN--MNCHEN-3YA.DE',
    'faß.de',
    'пример.рф',
    'ПРИМЕР.РФ',
    'www.例え.jp',
    'ａｃｍｅ.com',
    'acme。com',
    'acme.xn--p1ai'
]) WITH ORDINALITY AS v(input, n)
ORDER BY n;

-- Blanks around the input are trimmed (shown by label, not verbatim).
SELECT enrich.normalize_domain(input), label
FROM (VALUES
    (1, 'spaces', '  acme.com  '),
    (2, 'tab and newline', E'\tacme.com\r\n'),
    (3, 'no-break space', convert_from('\xc2a0'::bytea, 'UTF8') || 'acme.com'),
    (4, 'byte order mark', convert_from('\xefbbbf'::bytea, 'UTF8') || 'acme.com'),
    (5, 'zero-width space', 'acme.com' || convert_from('\xe2808b'::bytea, 'UTF8'))
) AS v(n, label, input)
ORDER BY n;

-- All the ways of writing one company give one key.
SELECT count(DISTINCT enrich.normalize_domain(input)) AS keys, count(*) AS inputs
FROM unnest(ARRAY[
    'acme.com', 'ACME.COM', 'www.acme.com', 'https://acme.com/', 'acme.com.',
    'jane@acme.com', 'mailto:bob@ACME.com', 'http://shop.acme.com:8080/x',
    ' acme.com '
]) AS v(input);

-- Invalid domains: IP addresses, localhost, single labels, public suffixes
-- alone, unknown top-level domains, malformed names and URLs.
SELECT pg_temp.try_domain(input) AS error, pg_temp.shown(input) AS input
FROM unnest(ARRAY[
    '',
    '   ',
    'acme',
    'localhost',
    'localhost.',
    'http://localhost:5432/',
    'foo.localhost',
    'acme.local',
    'acme.cmo',
    'com',
    'COM.',
    'co.uk',
    'gov.uk',
    'com.au',
    'k12.ca.us',
    'github.io',
    'x.kawasaki.jp',
    '127.0.0.1',
    '127.1',
    'http://127.1/',
    '0x7f.1',
    '2130706433',
    '10.0.0.1:8080',
    '1.2.3.4.5',
    '[::1]',
    '::1',
    '2001:db8::1',
    'http://[2001:db8::1]:8080/',
    'acme..com',
    '.acme.com',
    'acme.com..',
    'a_b.acme.com',
    '-acme.com',
    'acme-.com',
    'acme!.com',
    'acme com',
    'www .acme.com',
    '"Jane Doe" <jane@acme.com>',
    '<jane@acme.com>',
    'jane@bob@acme.com',
    'xn--zz.com',
    '💩.la',
    'https://',
    '//acme.com',
    'file:///etc/passwd',
    'javascript:alert(1)',
    'acme.com:http',
    'https://acme.com:99999/',
    E'acme.com\nother.com',
    repeat('abcdefghi.', 26) || 'com',
    repeat('a', 2049)
]) WITH ORDINALITY AS v(input, n)
ORDER BY n;

-- Limits: labels of 63 characters and names of 253 (254 with the root dot)
-- are valid, one more is not.
SELECT length(input) AS length, pg_temp.try_domain(input) AS result
FROM unnest(ARRAY[
    repeat('a', 63) || '.com',
    repeat('a', 64) || '.com',
    repeat('abcdefghi.', 24) || 'abcd.acme.com',
    repeat('abcdefghi.', 24) || 'abcd.acme.com.',
    repeat('abcdefghi.', 24) || 'abcde.acme.com'
]) WITH ORDINALITY AS v(input, n)
ORDER BY n;

-- The full error: message quoting the input, and a detail saying why.
SELECT enrich.normalize_domain('co.uk');
SELECT enrich.normalize_domain('http://127.1/');
-- A long input is cut, control characters are escaped.
SELECT enrich.normalize_domain(repeat('x', 150) || '.com');
SELECT enrich.normalize_domain(E'acme.com\nLOG:  forged line\r\x1b[0m');

--
-- LinkedIn profile URLs
--

-- The examples of the contract.
SELECT enrich.normalize_linkedin_url('linkedin.com/in/Jane-Doe');
SELECT enrich.normalize_linkedin_url('http://uk.linkedin.com/in/jane-doe/');
SELECT enrich.normalize_linkedin_url('https://www.linkedin.com/in/jane-doe?trk=x#top');

-- Valid profile URLs: hosts, mobile paths, trailing parts, tracking
-- queries, percent-encoding in either case.
SELECT enrich.normalize_linkedin_url(input), input
FROM unnest(ARRAY[
    'https://www.linkedin.com/in/jane-doe',
    'https://www.linkedin.com/in/jane-doe/',
    'HTTPS://WWW.LINKEDIN.COM/IN/JANE-DOE/',
    'www.linkedin.com/in/jane-doe',
    'https://linkedin.com/in/jane-doe',
    'http://www.linkedin.com/in/jane-doe',
    'https://de.linkedin.com/in/jane-doe',
    'https://in.linkedin.com/in/jane-doe',
    'https://BR.LinkedIn.com/in/Jane-Doe',
    'https://m.linkedin.com/in/jane-doe',
    'https://www.linkedin.com/m/in/jane-doe/',
    'https://www.linkedin.com/mwlite/in/jane-doe',
    'https://www.linkedin.com:443/in/jane-doe',
    'https://www.linkedin.com./in/jane-doe',
    'https://www.linkedin.com/in/jane-doe/?originalSubdomain=uk',
    'https://www.linkedin.com/in/jane-doe?utm_source=share&utm_campaign=share_via&utm_medium=ios_app',
    'https://www.linkedin.com/in/jane-doe#experience',
    'www.linkedin.com/in/jane-doe/details/experience/',
    'https://www.linkedin.com/in/jane-doe/recent-activity/all/',
    'https://www.linkedin.com/in/jane-doe/overlay/contact-info/',
    'https://www.linkedin.com/in/jane-doe/de',
    'linkedin.com//in//jane-doe//',
    'http://www.linkedin.com/in/./jane-doe',
    'linkedin.com/IN/jane-doe',
    'https://www.linkedin.com/in/jane-doe-1a2b3c4d',
    'https://www.linkedin.com/in/jane_doe.99',
    'https://www.linkedin.com/in/jane%2Ddoe',
    'https://www.linkedin.com/in/%6A%61%6E%65',
    'https://www.linkedin.com/in/j%C3%BCrgen',
    'https://www.linkedin.com/in/J%c3%bcrgen',
    'https://www.linkedin.com/in/jürgen',
    'https://www.linkedin.com/in/Jürgen-Müller-123/',
    'https://www.linkedin.com/in/JÜRGEN',
    'https://www.linkedin.com/in/张伟',
    'https://www.linkedin.com/in/%e5%bc%a0%e4%bc%9f',
    'https://www.linkedin.com/in/jane~doe',
    'https://www.linkedin.com/in/jane+doe',
    'https://www.linkedin.com/in/100%25-jane'
]) WITH ORDINALITY AS v(input, n)
ORDER BY n;

-- Blanks around the input are trimmed.
SELECT enrich.normalize_linkedin_url(E' \thttps://www.linkedin.com/in/jane-doe\n ');

-- All the ways of writing one person give one key.
SELECT count(DISTINCT enrich.normalize_linkedin_url(input)) AS keys, count(*) AS inputs
FROM unnest(ARRAY[
    'linkedin.com/in/Jane-Doe', 'http://uk.linkedin.com/in/jane-doe/',
    'https://www.linkedin.com/in/jane-doe?trk=x#top',
    'https://m.linkedin.com/in/JANE-DOE', 'https://www.linkedin.com/m/in/jane-doe',
    'https://www.linkedin.com/in/jane%2ddoe/details/skills/'
]) AS v(input);

-- Invalid: other LinkedIn pages, Sales Navigator, other and look-alike
-- hosts, empty or malformed slugs, other schemes.
SELECT pg_temp.try_linkedin(input) AS error, pg_temp.shown(input) AS input
FROM unnest(ARRAY[
    '',
    'jane-doe',
    'linkedin.com',
    'https://www.linkedin.com/',
    'https://www.linkedin.com/feed/',
    'https://www.linkedin.com/company/acme',
    'https://www.linkedin.com/company/acme/about/',
    'https://de.linkedin.com/company/acme-gmbh',
    'https://www.linkedin.com/showcase/acme-labs/',
    'https://www.linkedin.com/sales/lead/ACwAAA123,NAME_SEARCH,abcd',
    'https://www.linkedin.com/sales/people/ACwAAA123,name',
    'https://www.linkedin.com/sales/company/1234',
    'https://www.linkedin.com/pub/jane-doe/1/a2/b3',
    'https://www.linkedin.com/school/mit/',
    'https://www.linkedin.com/jobs/view/123456/',
    'https://www.linkedin.com/posts/jane-doe_activity-123',
    'https://www.linkedin.com/m/company/acme',
    'linkedin.com/in/',
    'linkedin.com/in',
    'https://www.linkedin.com/in/?trk=x',
    'linkedin.com/in/%20',
    'linkedin.com/in/%0A',
    'linkedin.com/in/%7F',
    'linkedin.com/in/%C2%85',
    'linkedin.com/in/jane%2Fdoe',
    'linkedin.com/in/%FF',
    'linkedin.com/in/%C3',
    'linkedin.com/in/%C0%AF',
    'linkedin.com/in/%ED%A0%80',
    'linkedin.com/in/%zz',
    'linkedin.com/in/jane%',
    'linkedin.com/in/%2E%2E',
    'linkedin.com/in/jane doe',
    'https://linkedin.com.evil.com/in/jane-doe',
    'https://www.linkedin.com.evil.com/in/jane-doe',
    'https://notlinkedin.com/in/jane-doe',
    'https://evil-linkedin.com/in/jane-doe',
    'https://evil.com/linkedin.com/in/jane-doe',
    'https://evil.com/?u=https://www.linkedin.com/in/jane-doe',
    'https://linkedin.com@evil.com/in/jane-doe',
    'https://www.linkedln.com/in/jane-doe',
    'https://lnkd.in/abc123',
    'https://.linkedin.com/in/jane-doe',
    'https://user:pw@www.linkedin.com/in/jane-doe',
    'ftp://www.linkedin.com/in/jane-doe',
    'javascript://www.linkedin.com/in/jane-doe',
    E'https://www.linkedin.com/in/jane\r\ndoe',
    'https://www.linkedin.com/in/' || repeat('a', 2030),
    -- found by fuzzing: short enough, but %60 makes the key too long
    'linkedin.com/in/' || repeat('`', 700)
]) WITH ORDINALITY AS v(input, n)
ORDER BY n;

-- The full error.
SELECT enrich.normalize_linkedin_url('https://www.linkedin.com/company/acme');
SELECT enrich.normalize_linkedin_url(E'https://evil.com/in/x\n2024-01-01 LOG:  forged');

--
-- In users' tables: a generated column and a unique index.
--
CREATE TEMP TABLE accounts (
    id int PRIMARY KEY,
    website text,
    domain text GENERATED ALWAYS AS (enrich.normalize_domain(website)) STORED
);
CREATE UNIQUE INDEX accounts_domain_key
    ON accounts (enrich.normalize_domain(website));
INSERT INTO accounts (id, website) VALUES
    (1, 'https://www.acme.com/'),
    (2, 'globex.co.uk'),
    (3, NULL);
-- another spelling of acme.com
INSERT INTO accounts (id, website) VALUES (4, 'sales@ACME.com');
-- not a domain
INSERT INTO accounts (id, website) VALUES (5, 'localhost');
SELECT id, website, domain FROM accounts ORDER BY id;
-- the index serves lookups by any spelling
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM accounts WHERE enrich.normalize_domain(website) = enrich.normalize_domain('ACME.COM');
SELECT id FROM accounts WHERE enrich.normalize_domain(website) = enrich.normalize_domain('ACME.COM');
RESET enable_seqscan;

CREATE TEMP TABLE people (
    id int PRIMARY KEY,
    profile text NOT NULL,
    profile_key text GENERATED ALWAYS AS (enrich.normalize_linkedin_url(profile)) STORED UNIQUE
);
INSERT INTO people (id, profile) VALUES
    (1, 'linkedin.com/in/Jane-Doe'),
    (2, 'https://de.linkedin.com/in/j%C3%BCrgen/');
-- another spelling of Jane's profile
INSERT INTO people (id, profile) VALUES (3, 'https://m.linkedin.com/in/jane-doe?trk=x');
SELECT id, profile, profile_key FROM people ORDER BY id;

DROP TABLE accounts, people;
