package billing

import "testing"

func TestCountries(t *testing.T) {
	t.Parallel()
	if n := len(countries); n != 249 {
		t.Errorf("len(countries) = %d; want the 249 ISO 3166-1 alpha-2 codes", n)
	}
	for _, c := range []string{"DE", "GR", "GB", "US", "CH", "NO", "AX", "SS", "ZW"} {
		if !ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = false; want true", c)
		}
	}
	for _, c := range []string{"", "UK", "EL", "XI", "EU", "de", "DEU", "XK"} {
		if ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = true; want false", c)
		}
	}
	if len(euVAT) != 27 {
		t.Errorf("len(euVAT) = %d; want the 27 member states", len(euVAT))
	}
	for c := range euVAT {
		if !ValidCountry(c) {
			t.Errorf("EU member %q is not a country code", c)
		}
		if _, ok := vatFormats[c]; !ok {
			t.Errorf("EU member %q has no VAT format", c)
		}
	}
}

func TestNormalizeTaxID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		country, in, want string
		ok                bool
	}{
		{"DE", "", "", true},
		{"DE", "   ", "", true},
		{"DE", "DE123456789", "DE123456789", true},
		{"DE", "123456789", "DE123456789", true},
		{"DE", "de 123.456-789", "DE123456789", true},
		{"DE", "DE12345678", "", false},
		{"DE", "DE1234567890", "", false},
		{"DE", "FR123456789", "", false},
		{"AT", "ATU12345678", "ATU12345678", true},
		{"AT", "AT12345678", "", false},
		{"BE", "BE0123456789", "BE0123456789", true},
		{"BE", "BE2123456789", "", false},
		{"GR", "EL123456789", "EL123456789", true},
		{"GR", "GR123456789", "EL123456789", true},
		{"GR", "123456789", "EL123456789", true},
		{"FR", "FRXX123456789", "FRXX123456789", true},
		{"FR", "FR12345678901", "FR12345678901", true},
		{"FR", "FRIO123456789", "", false},
		{"ES", "ESX1234567X", "ESX1234567X", true},
		{"ES", "ES12345678Z", "ES12345678Z", true},
		{"ES", "ES123456789", "", false},
		{"IE", "IE1234567T", "IE1234567T", true},
		{"IE", "IE1234567WA", "IE1234567WA", true},
		{"IE", "IE1A23456T", "IE1A23456T", true},
		{"NL", "NL123456789B01", "NL123456789B01", true},
		{"NL", "NL123456789", "", false},
		{"SE", "SE123456789001", "SE123456789001", true},
		{"SE", "SE123456789002", "", false},
		{"RO", "RO12", "RO12", true},
		{"RO", "RO0123", "", false},
		{"CY", "CY12345678L", "CY12345678L", true},
		{"LT", "LT123456789012", "LT123456789012", true},
		{"LT", "LT1234567890", "", false},
		{"GB", "GB123456789", "GB123456789", true},
		{"GB", "GB123456789012", "GB123456789012", true},
		{"GB", "GBGD001", "GBGD001", true},
		{"GB", "GBHA599", "GBHA599", true},
		{"GB", "GBHA499", "", false},
		{"CH", "CHE-123.456.789 MWST", "CHE123456789MWST", true},
		{"CH", "CHE123456789", "CHE123456789", true},
		{"CH", "CHE-123.456.789 TVA", "CHE123456789TVA", true},
		{"CH", "CHE12345678", "", false},
		{"NO", "NO123456789MVA", "NO123456789MVA", true},
		{"NO", "123456789", "NO123456789", true},
		{"NO", "NO12345678MVA", "", false},
		// A country without a known format keeps what was written.
		{"US", "12-3456789", "12-3456789", true},
		{"US", "  12-3456789 ", "12-3456789", true},
		{"US", "<script>", "", false},
		{"US", "-1", "", false},
		{"US", "123456789012345678901234567890123", "", false},
	}
	for _, tt := range tests {
		got, ok := NormalizeTaxID(tt.country, tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("NormalizeTaxID(%q, %q) = %q, %v; want %q, %v", tt.country, tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidVATID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		country, id string
		want        bool
	}{
		{"DE", "DE123456789", true},
		{"DE", "", false},
		{"DE", "DE1234", false},
		{"US", "12-3456789", false},
		{"GB", "GB123456789", true},
	}
	for _, tt := range tests {
		if got := validVATID(tt.country, tt.id); got != tt.want {
			t.Errorf("validVATID(%q, %q) = %v; want %v", tt.country, tt.id, got, tt.want)
		}
	}
}
