package billing

import (
	"regexp"
	"strings"
)

// countries are the officially assigned ISO 3166-1 alpha-2 codes (249):
// a billing profile's and a tax rule's country is one of them, so that a
// rule for "UK" (not a code) cannot silently never apply.
var countries = func() map[string]bool {
	const list = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ " +
		"BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
		"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ " +
		"DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR " +
		"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY " +
		"HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP " +
		"KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY " +
		"MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ " +
		"NA NC NE NF NG NI NL NO NP NR NU NZ OM " +
		"PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW " +
		"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ " +
		"TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ " +
		"VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
	m := make(map[string]bool, 249)
	for _, c := range strings.Fields(list) {
		m[c] = true
	}
	return m
}()

// ValidCountry reports whether c is an ISO 3166-1 alpha-2 code, in
// capitals.
func ValidCountry(c string) bool { return countries[c] }

// euVAT are the member states of the EU VAT area, where a supply of
// services to a business in another member state is reverse charged
// (Council Directive 2006/112/EC, Article 196). Northern Ireland (the XI
// prefix) is in it for goods only, so GB stays outside.
var euVAT = map[string]bool{
	"AT": true, "BE": true, "BG": true, "CY": true, "CZ": true, "DE": true, "DK": true, "EE": true, "ES": true,
	"FI": true, "FR": true, "GR": true, "HR": true, "HU": true, "IE": true, "IT": true, "LT": true, "LU": true,
	"LV": true, "MT": true, "NL": true, "PL": true, "PT": true, "RO": true, "SE": true, "SI": true, "SK": true,
}

// InEUVATArea reports whether country is a member state of the EU VAT area.
func InEUVATArea(country string) bool { return euVAT[country] }

// vatFormat is a country's VAT number: the prefix it is written with and
// the pattern of what follows the prefix.
type vatFormat struct {
	prefix string
	re     *regexp.Regexp
}

// vatFormats are the VAT identification number formats, from the
// European Commission's VIES description of each member state's number
// (the part after the prefix), and for the United Kingdom (HMRC: 9 or 12
// digits, GD and HA for government departments and health authorities),
// Switzerland (the UID: CHE and 9 digits, optionally followed by MWST,
// TVA or IVA) and Norway (the organisation number, 9 digits, followed by
// MVA when registered for VAT). Greece writes EL, not its ISO code. Only
// the format is checked: no checksum and no look-up, so a well-formed
// number that was never issued passes.
var vatFormats = map[string]vatFormat{
	"AT": {"AT", regexp.MustCompile(`^U\d{8}$`)},
	"BE": {"BE", regexp.MustCompile(`^[01]\d{9}$`)},
	"BG": {"BG", regexp.MustCompile(`^\d{9,10}$`)},
	"CY": {"CY", regexp.MustCompile(`^\d{8}[A-Z]$`)},
	"CZ": {"CZ", regexp.MustCompile(`^\d{8,10}$`)},
	"DE": {"DE", regexp.MustCompile(`^\d{9}$`)},
	"DK": {"DK", regexp.MustCompile(`^\d{8}$`)},
	"EE": {"EE", regexp.MustCompile(`^\d{9}$`)},
	"ES": {"ES", regexp.MustCompile(`^([A-Z]\d{7}[A-Z0-9]|\d{8}[A-Z])$`)},
	"FI": {"FI", regexp.MustCompile(`^\d{8}$`)},
	"FR": {"FR", regexp.MustCompile(`^[0-9A-HJ-NP-Z]{2}\d{9}$`)},
	"GR": {"EL", regexp.MustCompile(`^\d{9}$`)},
	"HR": {"HR", regexp.MustCompile(`^\d{11}$`)},
	"HU": {"HU", regexp.MustCompile(`^\d{8}$`)},
	"IE": {"IE", regexp.MustCompile(`^(\d{7}[A-W][A-I]?|\d[A-Z+*]\d{5}[A-W])$`)},
	"IT": {"IT", regexp.MustCompile(`^\d{11}$`)},
	"LT": {"LT", regexp.MustCompile(`^(\d{9}|\d{12})$`)},
	"LU": {"LU", regexp.MustCompile(`^\d{8}$`)},
	"LV": {"LV", regexp.MustCompile(`^\d{11}$`)},
	"MT": {"MT", regexp.MustCompile(`^\d{8}$`)},
	"NL": {"NL", regexp.MustCompile(`^\d{9}B\d{2}$`)},
	"PL": {"PL", regexp.MustCompile(`^\d{10}$`)},
	"PT": {"PT", regexp.MustCompile(`^\d{9}$`)},
	"RO": {"RO", regexp.MustCompile(`^[1-9]\d{1,9}$`)},
	"SE": {"SE", regexp.MustCompile(`^\d{10}01$`)},
	"SI": {"SI", regexp.MustCompile(`^\d{8}$`)},
	"SK": {"SK", regexp.MustCompile(`^\d{10}$`)},
	"GB": {"GB", regexp.MustCompile(`^(\d{9}|\d{12}|GD[0-4]\d{2}|HA[5-9]\d{2})$`)},
	"CH": {"CHE", regexp.MustCompile(`^\d{9}(MWST|TVA|IVA)?$`)},
	"NO": {"NO", regexp.MustCompile(`^\d{9}(MVA)?$`)},
}

// otherTaxID is a tax id of a country without a known format: letters,
// digits and the separators people write them with, kept as written.
var otherTaxID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ./-]{0,31}$`)

// NormalizeTaxID checks id as a tax id of country and returns the form
// stored. For a country with a known VAT format the form is canonical:
// capitals, without spaces, dots or dashes, with the country's prefix
// (DE123456789, EL123456789, CHE123456789MWST), whether or not it was
// written; ok is false when it does not match. Any other country's id is
// kept as written, trimmed, if it looks like an id at all. An empty id is
// valid (no tax id).
func NormalizeTaxID(country, id string) (normalized string, ok bool) {
	id = strings.TrimSpace(id)
	if id == "" {
		return "", true
	}
	f, known := vatFormats[country]
	if !known {
		return id, otherTaxID.MatchString(id)
	}
	compact := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '.', '-':
			return -1
		}
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, id)
	number := compact
	switch {
	case strings.HasPrefix(compact, f.prefix):
		number = compact[len(f.prefix):]
	case country == "GR" && strings.HasPrefix(compact, "GR"):
		// The ISO code where EL belongs: a common slip, same number.
		number = compact[2:]
	}
	if !f.re.MatchString(number) {
		return "", false
	}
	return f.prefix + number, true
}

// validVATID reports whether id is a VAT number of country's format, as a
// reverse charge requires: a country without a known format has none.
func validVATID(country, id string) bool {
	if _, known := vatFormats[country]; !known || id == "" {
		return false
	}
	_, ok := NormalizeTaxID(country, id)
	return ok
}
