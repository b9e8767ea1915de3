package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/promotions"
)

// promotionRoutes: a provider's promotion codes, and their redemptions on
// subscriptions (codes given at subscribe time are POST /v1/subscriptions').
func (a *api) promotionRoutes(r chi.Router) {
	p := a.cfg.PromotionCodes
	r.Get("/v1/promotions", a.handle(a.listPromotions))
	r.Post("/v1/promotions", a.handle(a.createPromotion))
	r.Get(idPath("/v1/promotions/{id}"), a.handle(read(p.Get)))
	r.Patch(idPath("/v1/promotions/{id}"), a.handle(write(http.StatusOK, p.Update)))
	r.Get(idPath("/v1/subscriptions/{id}/promotions"), a.handle(read(listOf(p.Redemptions))))
	r.Post(idPath("/v1/subscriptions/{id}/promotions"), a.handle(write(http.StatusCreated, p.Redeem)))
	r.Delete(idPath("/v1/subscriptions/{id}/promotions/{promotion_id:"+uuidParam+"}"), a.handle(a.endPromotion))
}

// endPromotion ends the redemption of a promotion on a subscription and
// answers it, ended.
func (a *api) endPromotion(w http.ResponseWriter, r *http.Request) error {
	sub, err := pathID(r, "id")
	if err != nil {
		return err
	}
	promo, err := pathID(r, "promotion_id")
	if err != nil {
		return err
	}
	out, err := a.cfg.PromotionCodes.End(r.Context(), actorFrom(r), sub, promo)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) createPromotion(w http.ResponseWriter, r *http.Request) error {
	// Refuse a caller who may not create before reading what it sent.
	actor := actorFrom(r)
	if err := promotions.MayCreate(actor); err != nil {
		return err
	}
	var in promotions.PromotionInput
	if err := decode(r, &in); err != nil {
		return err
	}
	out, err := a.cfg.PromotionCodes.Create(r.Context(), actor, in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/promotions/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *api) listPromotions(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	items, next, err := a.cfg.PromotionCodes.List(r.Context(), actorFrom(r), r.URL.Query().Get("cursor"), limit)
	return writePage(w, items, next, err)
}

var _ PromotionQuoter = (*promotions.Service)(nil)
