//! The derives of `switchyard-sdk` (use them through `switchyard_sdk::{Event, Events}`).
//!
//! - `#[derive(Event)]` on a struct, with `#[event(type = "...", topic = "...", key = field)]`:
//!   the struct is one CloudEvents type on one topic; `key` (optional) names the field whose
//!   value (through `Display`) is the partition key, so every event of that key is ordered.
//! - `#[derive(Events)]` on an enum whose variants each hold one `Event` type: a closed set
//!   of types on one topic (an event-sourced entity's events), decoded by `type`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match event(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[proc_macro_derive(Events)]
pub fn derive_events(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match events(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct EventAttr {
    ty: LitStr,
    topic: LitStr,
    key: Option<syn::Ident>,
}

fn parse_attr(input: &DeriveInput) -> syn::Result<EventAttr> {
    let mut ty = None;
    let mut topic = None;
    let mut key = None;
    let mut found = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        found = true;
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("type") {
                ty = Some(meta.value()?.parse::<LitStr>()?);
            } else if meta.path.is_ident("topic") {
                topic = Some(meta.value()?.parse::<LitStr>()?);
            } else if meta.path.is_ident("key") {
                let v = meta.value()?;
                // `key = order` or `key = "order"`.
                if v.peek(LitStr) {
                    let s: LitStr = v.parse()?;
                    key = Some(syn::Ident::new(&s.value(), s.span()));
                } else {
                    key = Some(v.parse::<syn::Ident>()?);
                }
            } else {
                return Err(meta.error("unknown key: #[event] takes `type`, `topic` and `key`"));
            }
            Ok(())
        })?;
    }
    if !found {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Event)] needs #[event(type = \"...\", topic = \"...\")]",
        ));
    }
    let ty = ty.ok_or_else(|| syn::Error::new(Span::call_site(), "#[event]: `type` is missing"))?;
    let topic =
        topic.ok_or_else(|| syn::Error::new(Span::call_site(), "#[event]: `topic` is missing"))?;
    if ty.value().is_empty() {
        return Err(syn::Error::new(ty.span(), "#[event]: `type` is empty"));
    }
    if topic.value().is_empty() {
        return Err(syn::Error::new(topic.span(), "#[event]: `topic` is empty"));
    }
    Ok(EventAttr { ty, topic, key })
}

fn event(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Event)] is for structs; a set of event types is #[derive(Events)] on an enum",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Event)] does not take generic types",
        ));
    }
    let attr = parse_attr(input)?;
    let name = &input.ident;
    let (ty, topic) = (&attr.ty, &attr.topic);
    let key = match &attr.key {
        None => quote! { ::core::option::Option::None },
        Some(field) => {
            let Fields::Named(named) = &data.fields else {
                return Err(syn::Error::new(
                    field.span(),
                    "#[event(key = ...)] names a field: the struct needs named fields",
                ));
            };
            if !named
                .named
                .iter()
                .any(|f| f.ident.as_ref().is_some_and(|i| i == field))
            {
                return Err(syn::Error::new(
                    field.span(),
                    format!("#[event(key = {field})]: the struct has no field `{field}`"),
                ));
            }
            quote! { ::core::option::Option::Some(::std::string::ToString::to_string(&self.#field)) }
        }
    };
    Ok(quote! {
        impl ::switchyard_sdk::Event for #name {
            const TYPE: &'static str = #ty;
            const TOPIC: &'static str = #topic;
            fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                #key
            }
        }
        impl ::switchyard_sdk::Events for #name {
            fn topic() -> &'static str {
                #topic
            }
            fn types() -> &'static [&'static str] {
                &[#ty]
            }
            fn decode(
                event: &::switchyard_sdk::CloudEvent,
            ) -> ::switchyard_sdk::Result<::core::option::Option<Self>> {
                if event.ty() == #ty {
                    event.data_as::<Self>().map(::core::option::Option::Some)
                } else {
                    ::core::result::Result::Ok(::core::option::Option::None)
                }
            }
            fn encode(&self) -> ::switchyard_sdk::Result<::switchyard_sdk::Outgoing> {
                ::switchyard_sdk::Outgoing::of(self)
            }
        }
    })
}

fn events(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Events)] is for enums whose variants each hold one #[derive(Event)] type",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Events)] does not take generic types",
        ));
    }
    let name = &input.ident;
    let mut variants = Vec::new();
    for v in &data.variants {
        let inner = match &v.fields {
            Fields::Unnamed(f) if f.unnamed.len() == 1 => &f.unnamed[0].ty,
            _ => {
                return Err(syn::Error::new(
                    v.ident.span(),
                    format!(
                        "variant `{}` must hold exactly one event type: `{}(SomeEvent)`",
                        v.ident, v.ident
                    ),
                ));
            }
        };
        variants.push((&v.ident, inner));
    }
    let Some((_, first)) = variants.first() else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[derive(Events)] needs at least one variant",
        ));
    };
    let decode = variants.iter().map(|(v, t)| {
        quote! {
            if event.ty() == <#t as ::switchyard_sdk::Event>::TYPE {
                return event.data_as::<#t>().map(|e| ::core::option::Option::Some(Self::#v(e)));
            }
        }
    });
    let encode = variants.iter().map(|(v, _)| {
        quote! { Self::#v(e) => ::switchyard_sdk::Outgoing::of(e), }
    });
    let types = variants
        .iter()
        .map(|(_, t)| quote! { <#t as ::switchyard_sdk::Event>::TYPE });
    let same_topic = variants.iter().skip(1).map(|(v, t)| {
        let msg = format!(
            "#[derive(Events)] on {name}: variant {v} is on another topic than the first \
             variant; an entity's events share one topic"
        );
        quote! {
            ::core::assert!(
                ::switchyard_sdk::__private::same_str(
                    <#first as ::switchyard_sdk::Event>::TOPIC,
                    <#t as ::switchyard_sdk::Event>::TOPIC,
                ),
                #msg
            );
        }
    });
    Ok(quote! {
        const _: () = { #(#same_topic)* };
        impl ::switchyard_sdk::Events for #name {
            fn topic() -> &'static str {
                <#first as ::switchyard_sdk::Event>::TOPIC
            }
            fn types() -> &'static [&'static str] {
                &[#(#types),*]
            }
            fn decode(
                event: &::switchyard_sdk::CloudEvent,
            ) -> ::switchyard_sdk::Result<::core::option::Option<Self>> {
                #(#decode)*
                ::core::result::Result::Ok(::core::option::Option::None)
            }
            fn encode(&self) -> ::switchyard_sdk::Result<::switchyard_sdk::Outgoing> {
                match self {
                    #(#encode)*
                }
            }
        }
    })
}
